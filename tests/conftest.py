"""Test-wide settings: no window system, and opentrons writes its config to a temp dir."""

from __future__ import annotations

import os
import tempfile

# Set before anything imports Qt or opentrons (pytest imports conftest first).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OT_API_CONFIG_DIR", tempfile.mkdtemp(prefix="labctl-ot-config-"))
