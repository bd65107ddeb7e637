"""What the simulated robot refuses, as data: the HTTP layer words each refusal as
robot-server does (:mod:`labctl.simulators.opentrons_http`)."""

from __future__ import annotations

import enum


class Refused(enum.Enum):
    """Why the robot refuses a request (the subject of a :class:`Refusal` in brackets)."""

    PROTOCOL_NOT_FOUND = "protocol not found"  # (protocol id)
    ANALYSIS_NOT_FOUND = "analysis not found"  # (analysis id)
    RUN_NOT_FOUND = "run not found"  # (run id)
    COMMAND_NOT_FOUND = "command not found"  # (command id)
    PROTOCOL_USED_BY_RUN = "protocol used by a run"  # (protocol id)
    ANALYSIS_PENDING = "last analysis pending"  # (analysis id)
    FILES_INVALID = "protocol files invalid"  # (the reader's detail)
    ANALYSIS_PROCESS_DIED = "analysis process died"  # (detail)
    ROBOT_TYPE_MISMATCH = "protocol for another robot type"  # (the protocol's robot type)
    PARAMETER_VALUES = "invalid run-time parameter values"  # (opentrons' detail)
    ESTOP = "estop"  # (estop state)
    RUN_ALREADY_ACTIVE = "run already active"
    RUN_NOT_CURRENT = "run not current"  # (run id)
    RUN_NOT_IDLE = "run not idle"
    # PATCH /runs/{id} words these two its own way (robot-server's RunDataManager.update)
    UPDATE_NOT_CURRENT = "run to update not current"  # (run id)
    UPDATE_NOT_IDLE = "run to update not idle"


class Refusal(Exception):
    """A request the robot refuses: ``reason`` and what it concerns (``subject``)."""

    def __init__(self, reason: Refused, subject: str = "") -> None:
        super().__init__(f"{reason.value}: {subject}" if subject else reason.value)
        self.reason = reason
        self.subject = subject


class ActionNotAllowed(Exception):
    """A run action the run engine refuses (robot-server: 409 RunActionNotAllowed), with the
    engine's error type and message."""

    def __init__(self, engine_error: str, message: str) -> None:
        super().__init__(message)
        self.engine_error = engine_error
        self.message = message
