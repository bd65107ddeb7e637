"""Parts of labctl that live outside the core (drivers, simulators, console), found by name.

The core never imports them (DESIGN.md layering; a test reads the imports). They are
declared as entry points of the ``labctl.plugins`` group in pyproject.toml and loaded here
only when a command needs one, so the core also works where they are not installed.
"""

from __future__ import annotations

from importlib.metadata import entry_points
from typing import Any

from labctl.errors import LabctlError

GROUP = "labctl.plugins"


def load(name: str) -> Any:
    """The object registered as ``name`` (a function, usually). Raises LabctlError if absent."""
    for ep in entry_points(group=GROUP):
        if ep.name == name:
            try:
                return ep.load()
            except ImportError as exc:
                raise LabctlError(f"the '{name}' part of labctl cannot be loaded: {exc}") from exc
    raise LabctlError(
        f"the '{name}' part of labctl is not installed (reinstall labctl: pip install -e .)"
    )
