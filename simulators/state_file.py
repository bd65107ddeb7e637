"""Small JSON state files that let a simulator process be killed and started again.

Each file is replaced whole (written beside it, then renamed over it), so a process killed
at any moment leaves either the old state or the new one, never half of either.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from labctl.errors import LabctlError

__all__ = ["StateFileError", "load_json", "save_json"]


class StateFileError(LabctlError):
    """A simulator's state file cannot be read back."""


def save_json(path: Path, data: Any) -> None:
    """Replace ``path`` with ``data`` as JSON, atomically."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    os.replace(tmp, path)


def load_json(path: Path) -> Any:
    """What ``path`` holds (None when there is no such file). Raises StateFileError for a
    file that is not JSON, naming it and what to do."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return json.loads(text)
    except ValueError as exc:
        raise StateFileError(
            f"{path} is not a simulator state ({exc}); delete it to start that device afresh"
        ) from None
