"""The command exchange with one serial incubator, as :class:`SerialIncubator` uses it.

:class:`IncubatorLink` wraps a CytomatDriver or LiconicDriver: it opens the port on demand,
keeps the last status read (an alarm check right after a poll then costs nothing), and
closes a port whose link broke so that the next call reopens it (the same port or URL: a
restarted device server or USB adapter is reached again). It never initialises a device by
itself; :meth:`IncubatorLink.start_initialize` is for a device that refused a move as not
initialised. It decides nothing about operations (drivers/incubator_moves.py does).

Not thread-safe by itself: the adapter calls it under its lock.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import ParamSpec, Protocol, TypeVar

from labctl.clock import Clock
from labctl.devices import Climate
from labctl.errors import DeviceCommunicationError, DeviceError

from .serial_io import IncubatorStatus

__all__ = ["GATE_KINDS", "IncubatorLink", "SerialIncubatorDriver"]

#: The operations on the automatic gate (lift door), as MoveTracker and the link name them.
GATE_KINDS = ("gate-open", "gate-close")

log = logging.getLogger(__name__)

_P = ParamSpec("_P")
_T = TypeVar("_T")


class SerialIncubatorDriver(Protocol):
    """What the adapter uses of CytomatDriver / LiconicDriver (both fit as they are)."""

    name: str
    move_timeout_s: float

    def connect(self) -> None: ...

    def close(self) -> None: ...

    def initialize(self, timeout_s: float | None = None) -> IncubatorStatus: ...

    def start_initialize(self) -> None: ...

    def initializing(self) -> bool: ...

    def start_fetch(self, slot: int) -> None: ...

    def check_started(self) -> None: ...

    def start_store(self, slot: int) -> None: ...

    def start_gate(self, open_: bool) -> None: ...

    def poll(self) -> IncubatorStatus: ...

    def wait_idle(self, timeout_s: float | None = None) -> IncubatorStatus: ...

    def read_climate(self) -> Climate: ...

    def set_climate(
        self, *, temperature_c: float | None = None, co2_pct: float | None = None
    ) -> None: ...


class IncubatorLink:
    """One incubator's driver, connected on demand.

    ``initialize``: the device may be initialised when it refuses a move as not initialised
    (False: a person initialises it). ``status_max_age_s``: a status read is reused by
    :meth:`fresh_status` for this long (seconds on ``clock``).

    Every call connects first if needed; a DeviceError from the driver propagates after a
    broken link (not a device answer) has been closed.
    """

    def __init__(
        self,
        name: str,
        driver: SerialIncubatorDriver,
        clock: Clock,
        *,
        initialize: bool = True,
        status_max_age_s: float = 2.0,
    ) -> None:
        self.name = name
        self.driver = driver
        self.clock = clock
        self.initialize = initialize
        self.status_max_age_s = status_max_age_s
        self._connected = False
        self._status: tuple[float, IncubatorStatus] | None = None  # (clock.monotonic(), read)

    def initializing(self) -> bool:
        """Whether the busy device is initialising (rather than moving a plate)."""
        return self._call(self.driver.initializing)

    def start_initialize(self) -> None:
        """Start initialising the handler, without waiting; the last status read is dropped."""
        self._call(self.driver.start_initialize)
        self._status = None

    def read_status(self) -> IncubatorStatus:
        """Read the device's status now (and keep it for :meth:`fresh_status`)."""
        st = self._call(self.driver.poll)
        self._status = (self.clock.monotonic(), st)
        return st

    def fresh_status(self) -> IncubatorStatus:
        """The last status read if it is at most ``status_max_age_s`` old, else a new one."""
        if (
            self._status is not None
            and self.clock.monotonic() - self._status[0] <= self.status_max_age_s
        ):
            return self._status[1]
        return self.read_status()

    def clear_error(self) -> IncubatorStatus:
        """Read and clear the latched device error: the driver raises it as its typed error."""
        return self._call(self.driver.wait_idle, 0.0)

    def start(self, kind: str, slot: int) -> None:
        """Start a ``"fetch"`` or ``"store"`` of ``slot``, or a ``"gate-open"`` /
        ``"gate-close"`` (``slot`` unused); the last status read is dropped.

        Raises NotInitialized when the device refused it as not initialised (nothing moved).
        """
        self._status = None
        if kind in GATE_KINDS:
            self._call(self.driver.start_gate, kind == "gate-open")
            return
        self._call(self.driver.start_fetch if kind == "fetch" else self.driver.start_store, slot)

    def check_started(self) -> None:
        """Right after a start was accepted: NotInitialized if the device refused it at once
        as not initialised (LiCONiC; a Cytomat says so in its reply to the start)."""
        self._call(self.driver.check_started)

    def read_climate(self) -> Climate:
        """Actual climate (degC, percent)."""
        return self._call(self.driver.read_climate)

    def set_climate(self, temperature_c: float, co2_pct: float) -> None:
        """Write the temperature (degC) and CO2 (%) setpoints."""
        self._call(self.driver.set_climate, temperature_c=temperature_c, co2_pct=co2_pct)

    def close(self) -> None:
        """Close the serial port (it is reopened on the next call)."""
        self._connected = False
        self.driver.close()

    def _ensure_connected(self) -> None:
        if not self._connected:
            self.driver.connect()
            self._connected = True

    def _call(self, fn: Callable[_P, _T], *args: _P.args, **kwargs: _P.kwargs) -> _T:
        self._ensure_connected()
        try:
            return fn(*args, **kwargs)
        except DeviceError as exc:
            self._link_failed(exc)
            raise

    def _link_failed(self, exc: DeviceError) -> None:
        """A broken link (not a device answer) is reopened on the next call."""
        if isinstance(exc, DeviceCommunicationError) and exc.device_code is None:
            self._connected = False
            try:
                self.driver.close()
            except DeviceError:  # closing a dead port is fine
                log.debug("%s: close after a link failure failed", self.name, exc_info=True)
