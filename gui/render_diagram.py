"""Draw a run's schedule figure in a child process: ``python -m labctl.gui.render_diagram``.

Reads one JSON object on stdin (``text``: the locked protocol, ``parameters``, ``plates``,
``start`` ISO-8601, ``timezone``) and writes the PNG (labctl.reports.diagram) to stdout; on a
problem, one line on stderr and exit status 1. The console draws diagrams this way because
matplotlib's rendering holds Python's GIL for long stretches: in the console's own process
it would stall the GUI thread. Plain Python, no Qt.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import datetime

from labctl.errors import LabctlError


def render(request: dict[str, object]) -> bytes:
    """The PNG bytes for one request (see the module text)."""
    from labctl.gui.models.protocol import diagram_png, plan_of_text

    protocol, plan = plan_of_text(
        str(request["text"]),
        dict(request.get("parameters") or {}),  # type: ignore[call-overload]
        int(request.get("plates") or 1),  # type: ignore[call-overload]
        datetime.fromisoformat(str(request["start"])),
        str(request.get("timezone") or "UTC"),
    )
    return diagram_png(protocol, plan)


def main() -> int:
    # Drawing is background work: give the CPU to the console (and the engine) first.
    if hasattr(os, "nice"):
        try:
            os.nice(10)
        except OSError:
            pass
    try:
        request = json.loads(sys.stdin.read())
        png = render(request)
    except LabctlError as exc:
        sys.stderr.write(exc.user_message() + "\n")
        return 1
    except (ValueError, KeyError, TypeError) as exc:
        sys.stderr.write(f"bad diagram request: {exc}\n")
        return 1
    sys.stdout.buffer.write(png)
    sys.stdout.buffer.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
