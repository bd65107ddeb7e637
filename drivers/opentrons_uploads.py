"""The job protocols given to one Opentrons robot: uploaded ahead of time, or at the start.

A job's protocol is uploaded as ``<job key>.py`` with the job's run-time parameter values
(the first unused tip of each rack), and the robot analyses it. :meth:`ProtocolUploads.prepare`
(the engine calls it up to two days ahead) uploads a job whose contents this robot has not
had yet, so the robot analyses new contents while other work goes on;
:meth:`ProtocolUploads.analysed` then uses that upload when its analysis is of the very
values the job starts with (the plate does not wait on the deck for an analysis, which takes
tens of seconds on an OT-2), and uploads again otherwise: a run's analysis must be of its own
tips, and of its own source (a job may start on another deck position than expected, or
feed more plates). Identical liquid handling gives identical files whatever the tips; the
job key in the file name keeps jobs apart on the robot.

Not thread-safe by itself: the engine prepares and starts jobs from its one loop.
"""

from __future__ import annotations

import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from hashlib import sha256
from typing import Any

from labctl.errors import DeviceError

from .opentrons_http import OpentronsClient
from .opentrons_protocol import GeneratedProtocol, GenerationError

__all__ = ["ProtocolUploads", "protocol_filename"]

_MAX_KEY_CHARS = 100
# Protocol contents remembered as already given to the robot (prepare skips them). The robot
# itself keeps only 5 protocols no run uses; more prepared at once would be deleted unused.
_SEEN_MAX = 256
_PREPARED_MAX = 4
_PREPARE_PAUSE_S = 600.0  # after a failed upload ahead, none is tried for this long


def protocol_filename(job_key: str) -> str:
    """The file name a job's protocol is uploaded as: ``<safe key>.py``.

    The key is kept where it is made of ``[A-Za-z0-9_.-]``; other characters become ``_``
    and then a short hash of the original key is appended, so two keys never share a name
    (``r7:d3/P2/2`` and ``r7_d3_P2_2`` stay apart). Long keys are cut and hashed likewise.
    """
    if not job_key:
        raise ValueError("a job key cannot be empty")
    safe = re.sub(r"[^A-Za-z0-9_.-]", "_", job_key).lstrip(".")
    if safe != job_key or len(safe) > _MAX_KEY_CHARS:
        digest = sha256(job_key.encode()).hexdigest()[:10]
        safe = f"{safe[:_MAX_KEY_CHARS]}.{digest}"
    return f"{safe}.py"


@dataclass(frozen=True)
class _Prepared:
    """An upload made ahead of a job's start."""

    protocol_id: str
    analysis_id: str
    values: dict[str, Any]  # the run-time parameter values it was analysed with
    digest: str  # sha256 of the source uploaded


class ProtocolUploads:
    """Uploads of job protocols through ``client``, and the ones made ahead of their jobs."""

    def __init__(self, client: OpentronsClient) -> None:
        self.client = client
        self._seen: OrderedDict[str, None] = OrderedDict()  # sha256 of sources uploaded
        self._prepared: OrderedDict[str, _Prepared] = OrderedDict()  # job key -> upload
        self._paused_until = float("-inf")  # clock.monotonic() seconds

    def prepare(self, job_key: str, plan: Callable[[], GeneratedProtocol]) -> None:
        """Upload the protocol ``plan()`` makes for the job, unless the robot has had its
        contents already. Best effort and silent: a job that cannot be planned (GenerationError,
        or a DeviceError when planning asks the robot, e.g. its attached pipettes) or uploaded
        now is left to the job's start, which reports why. After a DeviceError (the robot
        unreachable, say), none is tried for ``_PREPARE_PAUSE_S``: each try may wait out the
        client's time-out, and the engine's loop waits with it."""
        now = self.client.clock.monotonic()
        if now < self._paused_until:
            return
        try:
            job = plan()
        except GenerationError:
            return
        except DeviceError:
            self._paused_until = now + _PREPARE_PAUSE_S
            return
        source = job.source.encode()
        digest = sha256(source).hexdigest()
        if digest in self._seen or job_key in self._prepared:
            return
        values = job.run_time_parameters
        try:
            uploaded = self.client.upload_protocol(
                protocol_filename(job_key), source, run_time_parameters=values
            )
        except DeviceError:
            self._paused_until = now + _PREPARE_PAUSE_S
            return
        self._remember(digest)
        self._prepared[job_key] = _Prepared(
            uploaded.protocol_id, uploaded.analysis_id, dict(values or {}), digest
        )
        while len(self._prepared) > _PREPARED_MAX:
            self._prepared.popitem(last=False)  # its job did not come: analysed() uploads

    def analysed(self, job_key: str, filename: str, job: GeneratedProtocol) -> str:
        """The id of the job's protocol on the robot, analysed ``ok`` with the job's values:
        the upload made ahead if it fits, else a new upload as ``filename``.

        Raises DeviceFault when the robot's analysis is not ok, and the client's errors.
        """
        source = job.source.encode()
        values = job.run_time_parameters
        prepared = self._prepared_analysis(job_key, values or {}, sha256(source).hexdigest())
        if prepared is not None:
            return prepared.protocol_id
        # The values go with the upload too, so the robot's analysis is of this very run.
        uploaded = self.client.upload_protocol(filename, source, run_time_parameters=values)
        self._remember(sha256(source).hexdigest())
        self.client.require_ok(
            self.client.wait_for_analysis(
                uploaded.protocol_id,
                uploaded.analysis_id,
                pending=uploaded.analysis_status == "pending",
            )
        )
        return uploaded.protocol_id

    def _remember(self, digest: str) -> None:
        self._seen[digest] = None
        self._seen.move_to_end(digest)
        while len(self._seen) > _SEEN_MAX:
            self._seen.popitem(last=False)

    def _prepared_analysis(
        self, job_key: str, values: Mapping[str, Any], digest: str
    ) -> _Prepared | None:
        """The upload ``prepare`` made for the job, if it is of the source with sha256
        ``digest`` and its analysis is of ``values``.

        Waits for that analysis in any case: the robot refuses a new upload of the same file
        while the last analysis is pending (503 LastAnalysisPending). None if there is none,
        the source or the values differ (the job starts on another deck position than was
        expected, or with more plates), or the robot no longer has it (it deletes unused
        protocols to make room) or cannot be asked: the job is then uploaded as usual, which
        reports errors."""
        prepared = self._prepared.pop(job_key, None)
        if prepared is None:
            return None
        try:
            analysis = self.client.wait_for_analysis(prepared.protocol_id, prepared.analysis_id)
        except DeviceError:
            return None
        if prepared.digest != digest or prepared.values != dict(values):
            return None
        if not analysis.completed:
            return None
        self.client.require_ok(analysis)
        return prepared
