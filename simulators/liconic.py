"""Wire-level simulator of a LiCONiC StoreX STX automated incubator (DEVICES.md section 3).

:class:`LiconicSim` is the device (PLC) side of the RS-232 host-link protocol as a pure
object: ``handle_line("RD 1915") -> "1"``. Serve it with
:mod:`labctl.simulators.serial_link` (the real port runs 9600 8E1 with RTS/CTS; replies
end with CRLF). State is computed from the injected clock: an operation started at t has
the ready flag at 0 until t + duration; every request first brings the state up to
``clock.now()``.

Session: every line before the session is opened answers ``E1``. ``CR`` opens it
(``CC``); a BREAK (:meth:`break_signal`, or a NUL byte through a link) closes it again.
With ``require_break=True`` only a ``CR`` after a BREAK opens it (a pty or socket link
cannot carry a real BREAK: see serial_link). ``CR`` on an open session answers ``CC``.

Grammar (exact: upper case, one space; anything else is ``E1``):
``ST nnnn`` / ``RS nnnn`` set / reset relay -> ``OK``; ``RD nnnn`` -> ``0``/``1``;
``WR DMn v`` -> ``OK`` (v an integer -32768..65535); ``RD DMn`` -> five digits, e.g.
``00370`` (negative: ``-0005``). Relays outside the emulated set and DM addresses above
9999 answer ``E0``; writing a read-only relay or DM answers ``E4``.

Relays emulated:

- ``1915`` ready (read only): ``1`` when no operation runs and no handling error is set.
- ``1814`` handling error flag, ``1813`` plate on transfer station, ``1812`` plate on the
  shovel (read only).
- ``1801`` initialise, ``1904`` import (transfer station -> cassette DM0 / level DM5),
  ``1905`` export (that slot -> transfer station): each needs ready, else ``E1``; ``RD``
  answers ``1`` while that operation runs; ``RS`` is accepted and does nothing.
- ``1903`` terminate access: needs ready; takes no time (nothing to do in the simulator).
- ``1900`` reset, ``1800`` soft reset: accepted at any time; abort the operation in
  progress (its plate goes back where it came from), clear 1814 and DM200; ready at once.
- ``1200 1201 1213 1214 1215 1604`` stored flags (``ST``/``RS``/``RD``); no unsolicited
  message is ever sent, whatever they hold.

Data memory: a store DM0..DM9999 (default 0), persistent; DM200 handling-error code (read
only). Climate (integers): DM890 temperature setpoint / DM982 actual, 0.1 degC;
DM893 / DM983 humidity, 0.1 %RH; DM894 / DM984 CO2, 0.01 %vol; DM895 / DM985 the N2
channel, taken as O2 control (see assumptions), 0.01 %vol. Actual-value DMs are read only.

Handling errors: flag 1814 = 1 and DM200 = code; ready stays 0 until ``ST 1900`` (the
manual's recovery: on ready time-out read 1814, then DM200, then reset). The plate stays
where it was.

ASSUMPTIONS (configurable in :class:`LiconicConfig` where they are values):

- DM200 codes, following 3.3's "001xx import / 002xx export, xx = sub-code": import with
  no plate on the transfer station 00116 (16 no plate on shovel), import into an occupied
  slot 00111 (11 stacker slot), export from an empty slot 00216, export while the
  transfer station is occupied 00213 (13 transfer detection), DM0/DM5 outside the
  geometry 00011, import/export before ``ST 1801`` 00014 (lift init), any operation while
  the door is open (door_open fault) 00007 (gate). Checked ones end the operation after
  its normal duration; position, initialisation and door errors are raised at once.
- An operation relay set while not ready answers ``E1``.
- The N2 channel regulates O2 (hypoxia): DM895 is the O2 setpoint, DM985 the O2 reading,
  in 0.01 %vol; without an O2 setpoint in the climate config it holds 21.00 %.
- Slot numbering in the action log: slot = (cassette - 1) * levels + level.
- The plate is on the shovel for the whole of a successful import/export.

Physical-side API: :meth:`place_on_transfer_station`, :meth:`take_from_transfer_station`,
:attr:`slots` (keyed by (cassette, level)), :attr:`transfer_station`, :attr:`actions`.
Completed ``init`` / ``retrieve`` (export) / ``store`` (import) actions are logged once
each with the virtual completion time.
"""

from __future__ import annotations

import dataclasses
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path

from labctl.clock import Clock
from labctl.errors import DeviceError

from .faults import (
    ActionLog,
    Climate,
    ClimateConfig,
    Fault,
    FaultInjector,
    PhysicalAction,
    TransferStationSide,
    check_codes,
)

__all__ = ["LiconicConfig", "LiconicSim"]

_RELAY = re.compile(r"(ST|RS|RD) (\d{4})")
_RD_DM = re.compile(r"RD DM(\d{1,5})")
_WR_DM = re.compile(r"WR DM(\d{1,5}) (-?\d{1,5})")

_READY, _ERROR_FLAG, _TS_SENSOR, _SHOVEL_SENSOR = 1915, 1814, 1813, 1812
_INIT, _IMPORT, _EXPORT, _TERMINATE = 1801, 1904, 1905, 1903
_RESETS = (1900, 1800)
_STORED_FLAGS = (1200, 1201, 1213, 1214, 1215, 1604)
_DM_CASSETTE, _DM_LEVEL, _DM_ERROR = 0, 5, 200
# Climate channel -> (setpoint DM, actual DM, integer units per channel unit)
_CLIMATE_DM = {
    "temperature": (890, 982, 10),
    "humidity": (893, 983, 10),
    "co2": (894, 984, 100),
    "o2": (895, 985, 100),
}
_AMBIENT_O2 = 21.0


@dataclass(frozen=True)
class LiconicConfig:
    """The simulated model: geometry, timing (seconds), session rule and assumed DM200 codes."""

    cassettes: int = 2
    levels: int = 11
    transfer_s: float = 15.0
    init_s: float = 20.0
    require_break: bool = False
    climate: ClimateConfig = field(default_factory=lambda: ClimateConfig(humidity=90.0))
    import_source_empty_code: int = 116
    import_slot_occupied_code: int = 111
    export_source_empty_code: int = 216
    export_station_occupied_code: int = 213
    bad_position_code: int = 11
    not_initialised_code: int = 14
    door_open_code: int = 7

    def __post_init__(self) -> None:
        if self.cassettes < 1 or self.levels < 1:
            raise ValueError("cassettes and levels must be >= 1")
        if min(self.transfer_s, self.init_s) < 0:
            raise ValueError("durations must be >= 0 s")


@dataclass(frozen=True)
class _Op:
    """An operation in progress: it takes effect at ``ends``."""

    relay: int
    kind: str  # "retrieve" | "store" | "init"
    ends: datetime
    position: tuple[int, int] | None = None
    plate: str | None = None  # the plate on the shovel (successful moves only)
    error: int | None = None  # DM200 code set at ``ends``; nothing moves


class LiconicSim(TransferStationSide):
    """A LiCONiC StoreX PLC on the wire: ``handle_line`` in, reply out.

    ``plates`` is the initial occupancy: (cassette, level) pairs (labelled
    ``plate-C-L``) or a mapping (cassette, level) -> label. ``faults`` and ``action_log``
    as for the Cytomat simulator. Thread-safe: one lock covers every public method.
    """

    terminator = b"\r\n"

    def __init__(
        self,
        clock: Clock,
        config: LiconicConfig | None = None,
        *,
        name: str = "liconic",
        plates: Mapping[tuple[int, int], str] | Iterable[tuple[int, int]] = (),
        faults: Sequence[Fault] = (),
        action_log: str | Path | None = None,
    ) -> None:
        self.config = config or LiconicConfig()
        self.name = name
        self._clock = clock
        self._lock = threading.RLock()
        labels = (
            plates
            if isinstance(plates, Mapping)
            else {(c, lv): f"plate-{c}-{lv}" for c, lv in plates}
        )
        for pos in labels:
            if not self._valid(pos):
                raise ValueError(f"plate position {pos} is outside the cassettes/levels")
        self._slots: dict[tuple[int, int], str] = dict(labels)
        self._ts: str | None = None
        self._op: _Op | None = None
        self._error = 0
        self._initialised = False
        self._session_open = False
        self._break_seen = False
        self._flags = dict.fromkeys(_STORED_FLAGS, 0)
        self._dm: dict[int, int] = {}
        check_codes(faults, lambda c: bool(re.fullmatch(r"\d{1,5}", c)), "1-5 digits", "LiCONiC")
        self._faults = FaultInjector(faults, device=name)
        climate = self.config.climate
        if climate.o2 is None:
            climate = dataclasses.replace(climate, o2=_AMBIENT_O2)
        self._climate = Climate(climate, clock.now(), self._faults)
        self._log = ActionLog(action_log)
        self._changed_at: datetime | None = None  # last request or hand that may act

    # -- the wire --------------------------------------------------------------------------

    def handle_line(self, line: str) -> str | None:
        """Reply (no terminator) to one request line (no terminator); None = no reply."""
        with self._lock:
            now = self._clock.now()
            return self._faults.serve(now, lambda: self._execute(line, now))

    def break_signal(self) -> None:
        """BREAK received: the session closes; the next ``CR`` may reopen it."""
        with self._lock:
            self._session_open = False
            self._break_seen = True

    def _execute(self, line: str, now: datetime) -> str:
        self._update(now)
        if line == "CR":
            if self.config.require_break and not self._break_seen and not self._session_open:
                return "E1"
            self._session_open = True
            self._break_seen = False
            return "CC"
        if not self._session_open:
            return "E1"
        if not line.startswith("RD "):  # a read changes nothing; anything else may act
            self._changed_at = now
        if m := _RELAY.fullmatch(line):
            return self._relay(m.group(1), int(m.group(2)), now)
        if m := _RD_DM.fullmatch(line):
            return self._read_dm(int(m.group(1)), now)
        if m := _WR_DM.fullmatch(line):
            return self._write_dm(int(m.group(1)), int(m.group(2)), now)
        return "E1"

    # -- relays ----------------------------------------------------------------------------

    def _ready(self) -> bool:
        return self._op is None and self._error == 0

    def _relay(self, verb: str, addr: int, now: datetime) -> str:
        sensors = {
            _READY: self._ready(),
            _ERROR_FLAG: self._error != 0,
            _TS_SENSOR: self._ts is not None,
            _SHOVEL_SENSOR: self._op is not None and self._op.plate is not None,
        }
        if addr in sensors:
            return ("1" if sensors[addr] else "0") if verb == "RD" else "E4"
        if addr in self._flags:
            if verb == "RD":
                return str(self._flags[addr])
            self._flags[addr] = 1 if verb == "ST" else 0
            return "OK"
        if addr in _RESETS:
            if verb == "RD":
                return "0"
            if verb == "ST":
                self._reset()
            return "OK"
        if addr in (_INIT, _IMPORT, _EXPORT, _TERMINATE):
            if verb == "RD":
                return "1" if self._op is not None and self._op.relay == addr else "0"
            if verb == "RS":
                return "OK"
            if not self._ready():
                return "E1"
            if addr == _INIT:
                self._start_init(now)
            elif addr in (_IMPORT, _EXPORT):
                self._start_transfer(addr, now)
            return "OK"
        return "E0"

    def _reset(self) -> None:
        """ST 1900: abort the operation in progress (plate back at its source), clear errors."""
        op = self._op
        if op is not None and op.plate is not None:
            if op.kind == "retrieve":
                assert op.position is not None
                self._slots[op.position] = op.plate
            else:
                self._ts = op.plate
        self._op = None
        self._error = 0

    def _start_init(self, now: datetime) -> None:
        if self._faults.door_open(now):
            self._error = self.config.door_open_code
            return
        ends = now + timedelta(seconds=self.config.init_s)
        self._op = _Op(_INIT, "init", ends)

    def _start_transfer(self, relay: int, now: datetime) -> None:
        cfg = self.config
        pos = (self._dm.get(_DM_CASSETTE, 0), self._dm.get(_DM_LEVEL, 0))
        if not self._initialised:
            self._error = cfg.not_initialised_code
            return
        if self._faults.door_open(now):
            self._error = cfg.door_open_code
            return
        if not self._valid(pos):
            self._error = cfg.bad_position_code
            return
        ends = now + timedelta(seconds=cfg.transfer_s)
        failure: int | None
        if relay == _IMPORT:
            kind = "store"
            if self._ts is None:
                failure = cfg.import_source_empty_code
            elif pos in self._slots:
                failure = cfg.import_slot_occupied_code
            else:
                failure = None
        else:
            kind = "retrieve"
            if pos not in self._slots:
                failure = cfg.export_source_empty_code
            elif self._ts is not None:
                failure = cfg.export_station_occupied_code
            else:
                failure = None
        if failure is None:
            code = self._faults.take_move_error(now)
            failure = None if code is None else int(code)
        if failure is not None:
            self._op = _Op(relay, kind, ends, pos, error=failure)
            return
        # The shovel takes the plate now; it arrives when the operation ends.
        if kind == "store":
            plate, self._ts = self._ts, None
        else:
            plate = self._slots.pop(pos)
        self._op = _Op(relay, kind, ends, pos, plate=plate)

    def _valid(self, pos: tuple[int, int]) -> bool:
        return 1 <= pos[0] <= self.config.cassettes and 1 <= pos[1] <= self.config.levels

    # -- data memory -----------------------------------------------------------------------

    def _read_dm(self, addr: int, now: datetime) -> str:
        if addr > 9999:
            return "E0"
        for channel, (set_dm, actual_dm, scale) in _CLIMATE_DM.items():
            if addr == set_dm:
                return f"{round(self._climate.setpoint(channel) * scale):05d}"
            if addr == actual_dm:
                return f"{round(self._climate.actual(channel, now) * scale):05d}"
        if addr == _DM_ERROR:
            return f"{self._error:05d}"
        return f"{self._dm.get(addr, 0):05d}"

    def _write_dm(self, addr: int, value: int, now: datetime) -> str:
        if addr > 9999:
            return "E0"
        if not -32768 <= value <= 65535:
            return "E1"
        if addr == _DM_ERROR or any(addr == a for _, a, _ in _CLIMATE_DM.values()):
            return "E4"
        for channel, (set_dm, _, scale) in _CLIMATE_DM.items():
            if addr == set_dm:
                self._climate.set_setpoint(channel, value / scale, now)
                return "OK"
        self._dm[addr] = value
        return "OK"

    # -- state -----------------------------------------------------------------------------

    def _update(self, now: datetime) -> None:
        """Let the operation in progress take effect if it has ended by ``now`` (once)."""
        op = self._op
        if op is None or now < op.ends:
            return
        self._op = None
        if op.error is not None:
            self._error = op.error
            return
        slot = cassette = level = None
        if op.kind == "init":
            self._initialised = True
        else:
            assert op.position is not None and op.plate is not None
            cassette, level = op.position
            slot = (cassette - 1) * self.config.levels + level
            if op.kind == "store":
                self._slots[op.position] = op.plate
            else:
                self._ts = op.plate
        command = f"ST {op.relay}"
        self._log.record(
            PhysicalAction(op.ends, self.name, op.kind, command, slot, op.plate, cassette, level)
        )

    # -- the physical side -----------------------------------------------------------------

    def place_on_transfer_station(self, plate: str) -> None:
        """A person or arm puts ``plate`` on the transfer station (it must be free)."""
        with self._lock:
            self._update(self._clock.now())
            op = self._op
            inbound = op is not None and op.kind == "retrieve" and op.plate is not None
            if self._ts is not None or inbound:
                raise DeviceError(
                    self.name, "place plate on transfer station", "the transfer station is not free"
                )
            self._ts = plate
            self._changed_at = self._clock.now()

    def take_from_transfer_station(self) -> str:
        """A person or arm takes the plate from the transfer station; returns its label."""
        with self._lock:
            plate = super().take_from_transfer_station()
            self._changed_at = self._clock.now()
            return plate

    def power_cycle(self) -> None:
        """The PLC is switched off and on again: the operation under way is lost before it
        took effect (a plate on the shovel is back where it came from: ASSUMPTION), the
        handling error is cleared, the session closes and handling must be initialised again
        (``ST 1801``). Plates in the cassettes and on the transfer station stay."""
        with self._lock:
            self._update(self._clock.now())
            self._reset()
            self._initialised = False
            self._session_open = False
            self._break_seen = False
            self._changed_at = self._clock.now()

    @property
    def slots(self) -> dict[tuple[int, int], str]:
        """Occupied slots as of now: (cassette, level) -> plate label (a copy)."""
        with self._lock:
            self._update(self._clock.now())
            return dict(self._slots)

    @property
    def ready(self) -> bool:
        """The ready flag (1915) as of now."""
        with self._lock:
            self._update(self._clock.now())
            return self._ready()

    @property
    def actions(self) -> tuple[PhysicalAction, ...]:
        """Physical actions completed by now, in order (brings the log up to date)."""
        with self._lock:
            self._update(self._clock.now())
            return self._log.entries
