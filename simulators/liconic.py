"""Wire-level simulator of a LiCONiC StoreX STX automated incubator (DEVICES.md section 3).

:class:`LiconicSim` is the device (PLC) side of the RS-232 host-link protocol as a pure
object: ``handle_line("RD 1915") -> "1"``. Serve it with :mod:`labctl.simulators.serial_link`
(the real port runs 9600 8E1 with RTS/CTS; replies end with CRLF). State is computed from the
injected clock: an operation started at t has the ready flag at 0 until t + duration; every
request first brings the state up to ``clock.now()``. The address space, which relay means
what and the handling-error codes with their sources: :mod:`.liconic_registers`.

Session: every line before the session is opened answers ``E1``. ``CR`` opens it (``CC``);
``CQ`` ends it (``CF``); a BREAK (:meth:`break_signal`, or a NUL byte through a link) closes
it too. With ``require_break=True`` only a ``CR`` after a BREAK opens it (a pty or socket
link cannot carry a real BREAK: see serial_link). ``CR`` on an open session answers ``CC``.

Grammar (exact: upper case, one space; anything else is ``E1``): ``ST nnnn`` / ``RS nnnn``
set / reset relay -> ``OK``; ``RD nnnn`` -> ``0``/``1``; ``WR DMn v`` -> ``OK`` (v an integer
-32768..65535); ``RD DMn`` -> five digits, e.g. ``00370`` (negative: ``-0005``). A relay
outside the PLC's relay space (bit above 15, channel above 29) and DM addresses above 9999
answer ``E0``; writing a sensor relay, DM200 or an actual climate value answers ``E4``.

Relays:

- Sensors (read only): ``1915`` ready (no operation runs, no handling error set), ``1814``
  handling error, ``1813`` transfer station, ``1812`` shovel, ``1807`` second transfer
  station (this model has one: always ``0``).
- Operations ``1801`` initialise, ``1904`` import, ``1905`` export, ``1908`` pick (slot
  DM0/DM5 -> shovel), ``1909`` place (shovel -> slot DM0/DM5): ``ST`` needs ready, else
  ``E1``; ``RD`` answers ``1`` while that operation runs; ``RS`` is accepted and does
  nothing. A picked plate rests on the shovel (ready again) until a place puts it down.
- ``1902`` continue / ``1903`` terminate access: need ready; nothing to do in the simulator.
- ``1900`` reset, ``1800`` soft reset: accepted at any time; abort the operation in progress
  (its plate goes back where it came from), clear 1814 and DM200; ready at once.
- Every other relay is a stored bit (``ST``/``RS``/``RD``): the shaker (``1913``, speed in
  DM39, see :attr:`shaking`), swap station ``1912``, shovel sensor switch ``1911``, barcode
  position ``1910``, ``1901``, the unsolicited-message flags (no message is ever sent,
  whatever they hold) ... Nothing moves for them and ready stays as it is.

Data memory: a store DM0..DM9999 (default 0, DM25 = levels and DM29 = cassettes at start),
persistent; DM200 handling-error code (read only). Climate (integers): DM890 temperature
setpoint / DM982 actual, 0.1 degC; DM893 / DM983 humidity, 0.1 %RH; DM894 / DM984 CO2,
0.01 %vol; DM895 / DM985 the N2 channel, taken as O2 control (see assumptions), 0.01 %vol.
Actual-value DMs are read only.

Handling errors: flag 1814 = 1 and DM200 = code; ready stays 0 until ``ST 1900`` (the
manual's recovery: on ready time-out read 1814, then DM200, then reset). The plate stays
where it was. Checked conditions end the operation after its normal duration; position,
initialisation and door errors are raised at once. Codes: :class:`LiconicConfig`.

ASSUMPTIONS (configurable in :class:`LiconicConfig` where they are values):

- Which code of the real table a unit raises in each case (see liconic_registers).
- An operation relay set while not ready answers ``E1``.
- The N2 channel regulates O2 (hypoxia): DM895 is the O2 setpoint, DM985 the O2 reading,
  in 0.01 %vol; without an O2 setpoint in the climate config it holds 21.00 %.
- Slot numbering in the action log: slot = (cassette - 1) * levels + level.
- The plate is on the shovel for the whole of a successful operation.
- A power cycle clears the stored relay bits (the shaker stops); DM values stay.

Physical-side API: :meth:`place_on_transfer_station`, :meth:`take_from_transfer_station`,
:attr:`slots` (keyed by (cassette, level)), :attr:`transfer_station`, :attr:`shovel`,
:attr:`shaking`, :attr:`actions`. Completed ``init`` / ``retrieve`` (export) / ``store``
(import) / ``pick`` / ``place`` actions are logged once each with the virtual completion
time.
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

from . import liconic_registers as reg
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

_AMBIENT_O2 = 21.0


@dataclass(frozen=True)
class LiconicConfig:
    """The simulated model: geometry, timing (seconds), session rule and DM200 codes."""

    cassettes: int = 2
    levels: int = 11
    transfer_s: float = 15.0  # one import or export
    init_s: float = 20.0
    shovel_s: float = 8.0  # one pick or place (ASSUMPTION)
    require_break: bool = False
    climate: ClimateConfig = field(default_factory=lambda: ClimateConfig(humidity=90.0))
    import_source_empty_code: int = 16
    import_slot_occupied_code: int = 107
    export_source_empty_code: int = 16
    export_station_occupied_code: int = 13
    shovel_occupied_code: int = 15
    pick_source_empty_code: int = 316
    pick_shovel_occupied_code: int = 315
    place_shovel_empty_code: int = 516
    place_slot_occupied_code: int = 511
    bad_position_code: int = 11  # cassette outside the unit
    bad_level_code: int = 12  # level outside the cassette
    not_initialised_code: int = 14
    door_open_code: int = 7

    def __post_init__(self) -> None:
        if self.cassettes < 1 or self.levels < 1:
            raise ValueError("cassettes and levels must be >= 1")
        if min(self.transfer_s, self.init_s, self.shovel_s) < 0:
            raise ValueError("durations must be >= 0 s")


@dataclass(frozen=True)
class _Op:
    """An operation in progress: it takes effect at ``ends``."""

    relay: int
    kind: str  # "init" | "store" | "retrieve" | "pick" | "place"
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
        self._shovel: str | None = None  # a picked plate resting on the shovel
        self._op: _Op | None = None
        self._error = 0
        self._initialised = False
        self._session_open = False
        self._break_seen = False
        self._bits: dict[int, int] = {}  # stored relays (everything not emulated otherwise)
        self._dm: dict[int, int] = {
            reg.DM_LEVELS: self.config.levels,
            reg.DM_CASSETTES: self.config.cassettes,
        }
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
        if line == "CQ":  # end of communication (KV host link)
            self._session_open = False
            return "CF"
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
        if not reg.relay_exists(addr):
            return "E0"
        sensors = {
            reg.READY: self._ready(),
            reg.ERROR_FLAG: self._error != 0,
            reg.TS_SENSOR: self._ts is not None,
            reg.SHOVEL_SENSOR: self._shovel is not None
            or (self._op is not None and self._op.plate is not None),
            reg.SECOND_TS_SENSOR: False,
        }
        if addr in sensors:
            return ("1" if sensors[addr] else "0") if verb == "RD" else "E4"
        if addr in reg.RESETS:
            if verb == "RD":
                return "0"
            if verb == "ST":
                self._reset()
            return "OK"
        if addr in reg.OPERATIONS or addr in (reg.CONTINUE_ACCESS, reg.TERMINATE):
            if verb == "RD":
                return "1" if self._op is not None and self._op.relay == addr else "0"
            if verb == "RS":
                return "OK"
            if not self._ready():
                return "E1"
            if addr == reg.INIT:
                self._start_init(now)
            elif addr in reg.OPERATIONS:
                self._start_move(addr, now)
            return "OK"
        if verb == "RD":
            return str(self._bits.get(addr, 0))
        self._bits[addr] = 1 if verb == "ST" else 0
        return "OK"

    def _reset(self) -> None:
        """ST 1900: abort the operation in progress (plate back at its source), clear errors."""
        op = self._op
        if op is not None and op.plate is not None:
            if op.kind in ("retrieve", "pick"):
                assert op.position is not None
                self._slots[op.position] = op.plate
            elif op.kind == "store":
                self._ts = op.plate
            else:
                self._shovel = op.plate
        self._op = None
        self._error = 0

    def _start_init(self, now: datetime) -> None:
        if self._faults.door_open(now):
            self._error = self.config.door_open_code
            return
        ends = now + timedelta(seconds=self.config.init_s)
        self._op = _Op(reg.INIT, "init", ends)

    def _start_move(self, relay: int, now: datetime) -> None:
        """Start an import, export, pick or place at DM0/DM5 (or raise its error at once)."""
        cfg = self.config
        kind = reg.OPERATIONS[relay]
        pos = (self._dm.get(reg.DM_CASSETTE, 0), self._dm.get(reg.DM_LEVEL, 0))
        if not self._initialised:
            self._error = cfg.not_initialised_code
            return
        if self._faults.door_open(now):
            self._error = cfg.door_open_code
            return
        if not 1 <= pos[0] <= cfg.cassettes:
            self._error = cfg.bad_position_code
            return
        if not 1 <= pos[1] <= cfg.levels:
            self._error = cfg.bad_level_code
            return
        duration = cfg.transfer_s if kind in ("store", "retrieve") else cfg.shovel_s
        ends = now + timedelta(seconds=duration)
        failure = self._failure(kind, pos)
        if failure is None:
            code = self._faults.take_move_error(now)
            failure = None if code is None else int(code)
        if failure is not None:
            self._op = _Op(relay, kind, ends, pos, error=failure)
            return
        # The shovel takes the plate now; it arrives when the operation ends.
        if kind == "store":
            plate, self._ts = self._ts, None
        elif kind == "place":
            plate, self._shovel = self._shovel, None
        else:
            plate = self._slots.pop(pos)
        self._op = _Op(relay, kind, ends, pos, plate=plate)

    def _failure(self, kind: str, pos: tuple[int, int]) -> int | None:
        """The DM200 code the operation ``kind`` at ``pos`` ends with, None if it can work."""
        cfg = self.config
        if kind == "store":
            if self._shovel is not None:
                return cfg.shovel_occupied_code
            if self._ts is None:
                return cfg.import_source_empty_code
            return cfg.import_slot_occupied_code if pos in self._slots else None
        if kind == "retrieve":
            if self._shovel is not None:
                return cfg.shovel_occupied_code
            if pos not in self._slots:
                return cfg.export_source_empty_code
            return cfg.export_station_occupied_code if self._ts is not None else None
        if kind == "pick":
            if self._shovel is not None:
                return cfg.pick_shovel_occupied_code
            return cfg.pick_source_empty_code if pos not in self._slots else None
        if self._shovel is None:
            return cfg.place_shovel_empty_code
        return cfg.place_slot_occupied_code if pos in self._slots else None

    def _valid(self, pos: tuple[int, int]) -> bool:
        return 1 <= pos[0] <= self.config.cassettes and 1 <= pos[1] <= self.config.levels

    # -- data memory -----------------------------------------------------------------------

    def _read_dm(self, addr: int, now: datetime) -> str:
        if addr > 9999:
            return "E0"
        for channel, (set_dm, actual_dm, scale) in reg.CLIMATE_DM.items():
            if addr == set_dm:
                return f"{round(self._climate.setpoint(channel) * scale):05d}"
            if addr == actual_dm:
                return f"{round(self._climate.actual(channel, now) * scale):05d}"
        if addr == reg.DM_ERROR:
            return f"{self._error:05d}"
        return f"{self._dm.get(addr, 0):05d}"

    def _write_dm(self, addr: int, value: int, now: datetime) -> str:
        if addr > 9999:
            return "E0"
        if not -32768 <= value <= 65535:
            return "E1"
        if addr == reg.DM_ERROR or any(addr == a for _, a, _ in reg.CLIMATE_DM.values()):
            return "E4"
        for channel, (set_dm, _, scale) in reg.CLIMATE_DM.items():
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
            if op.kind in ("store", "place"):
                self._slots[op.position] = op.plate
            elif op.kind == "retrieve":
                self._ts = op.plate
            else:
                self._shovel = op.plate
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
        handling error and the stored relay bits are cleared, the session closes and
        handling must be initialised again (``ST 1801``). Plates in the cassettes, on the
        transfer station and resting on the shovel stay; so does data memory."""
        with self._lock:
            self._update(self._clock.now())
            self._reset()
            self._bits.clear()
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
    def shovel(self) -> str | None:
        """The plate resting on the shovel after a pick (``ST 1908``), as of now."""
        with self._lock:
            self._update(self._clock.now())
            return self._shovel

    @property
    def shaking(self) -> bool:
        """Whether the shaker is on (relay 1913); its speed is DM39 as written."""
        with self._lock:
            return self._bits.get(reg.SHAKER, 0) == 1

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
