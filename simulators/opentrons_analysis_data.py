"""What the analysis service hands the simulated robot: a protocol's files as read, its
analyses, the content keys both cache by, and robot-server's rule for matching run-time
parameter values."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

Files = Sequence[tuple[str, bytes]]  # (file name, contents), as uploaded


@dataclasses.dataclass(frozen=True)
class ProtocolSourceInfo:
    """What robot-server learns from reading a protocol's files (before analysis)."""

    content_hash: str
    files: tuple[tuple[str, str], ...]  # (file name, role "main" | "labware" | "data")
    protocol_type: str  # "python" | "json"
    robot_type: str  # "OT-2 Standard" | "OT-3 Standard"
    metadata: Mapping[str, Any]
    api_level: str | None
    file_roles: tuple[tuple[str, str], ...] = ()  # (sha256 of contents, role), as in files


@dataclasses.dataclass(frozen=True)
class ProtocolAnalysis:
    """A completed analysis as robot-server serves it (JSON-ready; treat as read-only).

    Timestamps inside ``commands``/``errors`` are those of the analysis run; the simulator
    re-bases them onto its own clock when serving.
    """

    result: str  # "ok" | "not-ok" | "parameter-value-required"
    robot_type: str
    run_time_parameters: tuple[Mapping[str, Any], ...]
    commands: tuple[Mapping[str, Any], ...]
    labware: tuple[Mapping[str, Any], ...]
    pipettes: tuple[Mapping[str, Any], ...]
    modules: tuple[Mapping[str, Any], ...]
    liquids: tuple[Mapping[str, Any], ...]
    errors: tuple[Mapping[str, Any], ...]


def content_hash(files: Files) -> str:
    """Hash of the file set, independent of upload order (names and contents)."""
    digest = hashlib.sha256()
    for name, data in sorted(files):
        digest.update(name.encode("utf-8") + b"\0" + hashlib.sha256(data).digest())
    return digest.hexdigest()


def source_key(files: Files) -> str:
    """Hash of the files' contents and kinds (extensions), not of their names."""
    digest = hashlib.sha256()
    for suffix, data in sorted(
        (Path(name).suffix.lower(), hashlib.sha256(content).digest()) for name, content in files
    ):
        digest.update(suffix.encode("utf-8") + b"\0" + data)
    return digest.hexdigest()


def values_key(values: Mapping[str, Any]) -> str:
    """The run-time parameter values as a cache key part (1, 1.0 and True stay apart)."""
    return json.dumps(sorted((k, type(v).__name__, v) for k, v in values.items()))


def same_value(a: Any, b: Any) -> bool:
    """Equal as run-time parameter values: a bool never equals a number."""
    return isinstance(a, bool) == isinstance(b, bool) and a == b


def rtp_values_match(parameters: Sequence[Mapping[str, Any]], values: Mapping[str, Any]) -> bool:
    """Whether an analysis or run whose ``runTimeParameters`` are ``parameters`` used ``values``
    (parameters not given count as their defaults).

    robot-server's rule for re-using an analysis (``matching_rtp_values_in_analysis``): every
    given name is a parameter of the protocol, and each parameter's value equals the given
    one or, when none is given, its default.
    """
    known = {str(p.get("variableName")): p for p in parameters}
    if not set(values) <= set(known):
        return False
    return all(
        same_value(values.get(name, spec.get("default")), spec.get("value"))
        for name, spec in known.items()
    )
