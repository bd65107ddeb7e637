"""Typed errors. Each reaches the user as one clear sentence, never a traceback.

Categories carry a numeric code (1xxx input, 2xxx device, 3xxx engine/store) so logs and
the audit trail can be filtered by kind, in the way Opentrons' enumerated errors are.
"""

from __future__ import annotations

from dataclasses import dataclass


class LabctlError(Exception):
    """Base of every error labctl raises on purpose."""

    code: int = 1000

    def user_message(self) -> str:
        """The one sentence shown to the user."""
        return str(self)


@dataclass(frozen=True)
class Diagnostic:
    """One finding about an input file, located at 1-based line and column."""

    file: str
    line: int
    column: int
    severity: str  # "error" or "warning"
    message: str

    def format(self) -> str:
        return f"{self.file}:{self.line}:{self.column}: {self.severity}: {self.message}"


class ProtocolError(LabctlError):
    """A protocol (or workcell) file is invalid. Holds every diagnostic of the file."""

    code = 1001

    def __init__(self, diagnostics: list[Diagnostic]) -> None:
        self.diagnostics = list(diagnostics)
        first = self.diagnostics[0].format() if self.diagnostics else "invalid protocol"
        more = len(self.errors) - 1
        super().__init__(first + (f" (and {more} more)" if more > 0 else ""))

    @property
    def errors(self) -> list[Diagnostic]:
        return [d for d in self.diagnostics if d.severity == "error"]


class InputFileError(LabctlError):
    """A file could not be read at all (missing, unreadable, too large, not text)."""

    code = 1002


class ParameterError(LabctlError):
    """A run parameter given on the command line is unknown, malformed or out of bounds."""

    code = 1003


class PlanError(LabctlError):
    """A valid protocol cannot be resolved into a plan with the given inputs."""

    code = 1004


class DeviceError(LabctlError):
    """A device refused, failed, or could not be reached.

    ``device`` is the workcell's name for it, ``command`` what was sent, ``device_code``
    the device's own error code where it gave one.
    """

    code = 2000

    def __init__(
        self,
        device: str,
        command: str,
        message: str,
        *,
        device_code: str | None = None,
    ) -> None:
        self.device = device
        self.command = command
        self.device_code = device_code
        self.detail = message
        code = f" [device code {device_code}]" if device_code else ""
        super().__init__(f"{device}: {command}: {message}{code}")


class DeviceTimeout(DeviceError):
    """No (complete) reply within the deadline."""

    code = 2001


class DeviceCommunicationError(DeviceError):
    """The link failed or the reply could not be understood (garbled, wrong shape)."""

    code = 2002


class DeviceUnreachable(DeviceCommunicationError):
    """The device could not be reached and nothing that acts was delivered (connection
    refused, or a request that only reads went unanswered): it may be asked again later."""

    code = 2009


class DeviceBusy(DeviceError):
    """The device is doing something else and refused the command."""

    code = 2003


class DeviceFault(DeviceError):
    """The device reported an error while executing (hardware or handling fault)."""

    code = 2004


class DeviceNeedsOperator(DeviceError):
    """The device stopped and waits for a person (door open, error recovery, estop)."""

    code = 2005


class DeviceInitializing(DeviceBusy):
    """The device is (re)initialising and takes no command until it is done: wait, do not
    fail (a Cytomat's ``ll:in`` after power-up takes minutes)."""

    code = 2006


class OperationLost(DeviceError):
    """The device no longer knows an operation it accepted (a robot restarted and forgot its
    runs): whether it happened cannot be told from the device, so a person decides."""

    code = 2007


class PlaceConflict(DeviceError):
    """Where the plate is contradicts the operation: a fetch onto an occupied transfer
    station, a store from an empty one. The operation may already have happened (a store
    restored from an older copy, a lost reply): never retried blindly, a person decides."""

    code = 2008


class StoreError(LabctlError):
    """The run database is missing, locked, corrupt or of an unknown schema version."""

    code = 3001


class InvalidTransition(LabctlError):
    """A state machine was asked for a trigger its current state does not allow."""

    code = 3002
