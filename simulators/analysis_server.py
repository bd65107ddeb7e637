"""The robot simulator's analysis fork server imports this module (its only preload); nothing
else should: see :func:`labctl.simulators.opentrons_analysis_child.prepare_fork_server`."""

from __future__ import annotations

from labctl.simulators.opentrons_analysis_child import prepare_fork_server

prepare_fork_server()
