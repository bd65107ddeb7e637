"""Wire-level simulator of a Thermo Fisher Cytomat automated incubator (DEVICES.md section 2).

:class:`CytomatSim` is the device side of the RS-232 line protocol as a pure object:
``handle_line("mv:st 005") -> "ok 11"``. Serve it with :mod:`labctl.simulators.serial_link`
(9600 8N1, replies end with CR, or CRLF if configured). Its state is computed from the
injected clock: a move started at t is busy until t + duration, and every request first
brings the state up to ``clock.now()``; no thread advances it. The wire tables (models,
registers, error codes, location formats) are in :mod:`labctl.simulators.cytomat_codes`;
the corrections to DEVICES.md and their sources in /work/notes/devices-cytomat.md.
Checked against a client written for the real device: tests/test_third_party_cytomat.py
runs PyLabRobot's ``CytomatBackend`` against this simulator over a pseudo-terminal.

Commands emulated (anything else answers ``er 02``). ``LOC`` is a storage location: a
three-digit absolute slot ``NNN`` (1-based), or on a rack/site model (C2C_425) rack and
site ``RR SS`` (two digits each, both from 0); see :func:`cytomat_codes.parse_location`.

==============  ========================================================================
``mv:st LOC``   slot -> transfer station ("retrieve"); ``mv:ts LOC`` the reverse ("store")
``mv:sw LOC``   slot -> handler at the wait position; ``mv:ws LOC`` the reverse
``mv:wt``       wait position -> transfer station; ``mv:tw`` the reverse
``mv:wh``       wait -> exposed (held out through the opened gate); ``mv:hw`` the reverse
``mv:sh LOC``   slot -> exposed; ``mv:hs LOC`` exposed -> slot (gate closed again)
                (each move takes ``config.move_s``)
``mv:sn A B``   read the barcodes of slots A..B (three digits each; ``config.move_s``;
                the simulator has no barcodes: nothing changes)
``ll:in``       initialise the handler (``config.init_s``)
``ll:gp 001``   close / ``002`` open the automatic lift door (gate) (``config.gate_s``)
``ll:sp 001``   retract / ``002`` extend the shovel (``config.gate_s``); moves are refused
                (``er 12``) while it is extended
``ll:it TT.T``  temperature setpoint, degC (0.0-50.0); ``ll:ic CC.C`` CO2 setpoint, %vol
                (0.0-20.0); one or two integer digits and one decimal, e.g. ``05.0``
``ll:vi``       initialise shakers; ``ll:va [NNN]`` start, ``ll:vd [NNN]`` stop (all or
                shaker NNN); ``se:pb 2N FFFF`` frequency of shaker N+1; ``ch:pb 2N``
                reads it (``pb FFFF``). Only with ``config.shaker_units`` > 0.
``rs:be``       clear the error register
``ch:bs``       overview register ``bs XX``; ``ch:be``/``ch:bw``/``ch:ba`` error, warning,
                action registers (two hex digits); ``ch:ts`` sensor register (four hex
                digits); ``ch:sw`` transfer (swap) station ``sw PFU``
``ch:it``       ``it <setpoint> <actual>`` temperature; ``ch:ic`` CO2, ``ch:ih`` humidity,
                ``ch:io`` O2 (only when the climate has O2, else ``er 02``)
==============  ========================================================================

Replies: actions answer ``ok XX`` (overview register after the command took effect) or
``er XX``; checks echo their two letters and a value. Checks are answered while busy; any
action while busy gets ``er 01``.

Validation order: telegram shape (``er 03``: not ``tt:cc`` with single-space separated
parameters, or wrong number of parameters), known command (``er 02``), busy (``er 01``),
parameter shape (``er 04``), location outside the racks (``er 05``), not initialised
(``config.not_initialised_code``), shovel extended (``er 12``), handler not where the move
starts (``er 11``: held out while the move starts inside, or the reverse), transfer
station empty (``er 31``) or occupied (``er 32``), handler occupied (``er 21``) or empty
(``er 22``).

Registers (bit n = value ``1 << n``):

- Overview: 0x01 busy, 0x02 ready, 0x04 warning register set, 0x08 error register set,
  0x10 handler occupied, 0x20 gate open, 0x40 device door open, 0x80 transfer station
  occupied.
- Action: bits 7-5 target (1 init position, 2 wait position, 3 stacker, 4 transfer
  station), bits 4-0 the step (0x01 height motor, 0x05 rotate, 0x07/0x0A extend/retract
  shovel, 0x0C/0x0E close/open gate). A move's target switches from its source to its
  destination half-way through.
- Sensor: the vendor's 15 sensor bits (:data:`cytomat_codes.SENSOR_BITS`): shovel
  retracted/extended/occupied, gate opened/closed, transfer station occupied and in
  position 1, inner (device) door open, handler towards the stacker or the gate.
- Swap station ``sw PFU``: P the position in front of the gate (1 or 2), F / U the plate
  in front of the gate / at the user side (0 empty, 1 occupied). The simulated transfer
  station does not turn: ``sw 1F0``.

ASSUMPTIONS (not in the sources; each configurable in :class:`CytomatConfig` where it is a
value):

- Ready (0x02) is set whenever the device is not busy, and clear while busy.
- Moving from an empty slot ends after the move duration with error register ``02`` (MTP
  not loaded on shovel); moving into an occupied slot ends with ``03`` (MTP not
  unloaded). The device checks before it picks, so the plate stays where it was. The
  error register (and bit 0x08) stays until ``rs:be``; moves are still accepted while it
  is set.
- Moves before ``ll:in`` after power-up are refused with ``er 11`` (wrong handler
  position); ``require_init=False`` starts initialised.
- A move or ``ll:in`` started while the device door is open fails at once with error
  register ``05``. A move under way when the door opens completes.
- The plate is on the handler (0x10) for the whole of a successful move: it leaves its
  source when the move starts and reaches its destination when the move ends.
- The action register keeps its last value when an operation ends (``21`` after an
  initialisation); it reads ``00`` only before the first operation after power-up (a
  simulator started initialised reads ``21``).
- Climate replies use ``{:+05.1f}`` for both numbers: ``it +37.0 +36.9``, ``ic +05.0 +04.9``.
- The warning register is always ``00`` (nothing the simulator does raises a warning).

Physical-side API for the plate mover / operator / tests: :meth:`place_on_transfer_station`,
:meth:`take_from_transfer_station`, :attr:`slots`, :attr:`transfer_station`,
:attr:`handler`, :attr:`actions`. Completed moves are recorded once each in the action log
(:class:`~labctl.simulators.faults.ActionLog`): ``init``, ``retrieve`` (slot -> transfer
station), ``store`` (transfer station -> slot), and the handler's moves by their path
(``slot_to_wait``, ``wait_to_transfer``, ...), stamped with the virtual completion time
and numbered (``seq``: the operation's number, counted from the device's first).

Surviving a restart (a practice workcell's simulator process killed and started again):
``on_change`` is called, under the lock, with :func:`cytomat_state` after every change of
state (a command that acts, an operation taking effect, a hand at the transfer station),
and :func:`restore_cytomat` puts such a state back into a new simulator, an operation under
way included: it takes effect when its time comes, as it would have, and is logged once
(one already in the action log takes effect without a second entry). The climate's
setpoints are part of the state; give them to the new simulator's ``config``.
"""

from __future__ import annotations

import json
import re
import threading
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from labctl.clock import Clock
from labctl.errors import DeviceError

from .cytomat_codes import (
    ACT_CLOSE_GATE,
    ACT_EXTEND_SHOVEL,
    ACT_HEIGHT_MINUS,
    ACT_OPEN_GATE,
    ACT_RETRACT_SHOVEL,
    ACT_ROTATE,
    BUSY,
    DEVICE_DOOR_OPEN,
    ERROR,
    GATE_OPEN,
    HANDLER_OCCUPIED,
    READY,
    SENSOR_BITS,
    TARGET_INIT,
    TARGET_STACKER,
    TARGET_TRANSFER,
    TARGET_WAIT,
    TRANSFER_STATION_OCCUPIED,
    WARNING,
    CytomatConfig,
    parse_location,
)
from .faults import (
    ActionLog,
    Climate,
    Fault,
    FaultInjector,
    PhysicalAction,
    TransferStationSide,
    check_codes,
)

__all__ = [
    "BUSY",
    "DEVICE_DOOR_OPEN",
    "ERROR",
    "GATE_OPEN",
    "HANDLER_OCCUPIED",
    "READY",
    "TRANSFER_STATION_OCCUPIED",
    "WARNING",
    "CytomatConfig",
    "CytomatSim",
    "cytomat_state",
    "restore_cytomat",
]

_HEX2 = re.compile(r"[0-9A-F]{2}")
# Two-character type and command, then parameters each preceded by exactly one space.
_TELEGRAM = re.compile(r"([^\s:]{2}):([^\s:]{2})((?: [^\s]+)*)")
_SETPOINT = re.compile(r"\d{1,2}\.\d")

# Moves ("mv:" + two letters) -> (action-log name, from, to). Places: "slot", "ts" (the
# transfer station), "wait" (on the handler, inside), "exposed" (on the handler, held out
# through the open gate).
_MOVES: dict[str, tuple[str, str, str]] = {
    "st": ("retrieve", "slot", "ts"),
    "ts": ("store", "ts", "slot"),
    "sw": ("slot_to_wait", "slot", "wait"),
    "ws": ("wait_to_slot", "wait", "slot"),
    "wt": ("wait_to_transfer", "wait", "ts"),
    "tw": ("transfer_to_wait", "ts", "wait"),
    "wh": ("wait_to_exposed", "wait", "exposed"),
    "hw": ("exposed_to_wait", "exposed", "wait"),
    "sh": ("slot_to_exposed", "slot", "exposed"),
    "hs": ("exposed_to_slot", "exposed", "slot"),
}
_PATHS = {kind: (src, dst) for kind, src, dst in _MOVES.values()}
# The action register's target for each place.
_TARGET = {"slot": TARGET_STACKER, "ts": TARGET_TRANSFER, "wait": TARGET_WAIT}
_TARGET["exposed"] = TARGET_TRANSFER
# The register after an initialisation: target init position, height motor step.
_AFTER_INIT = TARGET_INIT << 5 | ACT_HEIGHT_MINUS


@dataclass(frozen=True)
class _Op:
    """An operation in progress: it takes effect at ``ends``."""

    kind: str  # "init" | "gate" | "shovel" | "scan" | a move's name (_MOVES)
    command: str
    started: datetime
    ends: datetime
    slot: int | None = None
    plate: str | None = None  # the plate on the handler (successful moves only)
    error: str | None = None  # error register code set at ``ends``; nothing moves
    gate_open: bool = False  # "gate": opens it; "shovel": extends it
    seq: int = 0  # the operation's number on this device (from 1), in the action log


class _Shakers:
    """The shaker units (``se:pb``, ``ll:vi/va/vd``, ``ch:pb``): their frequencies and
    which run. Each method returns an error reply, or None when the command is accepted."""

    def __init__(self, units: int) -> None:
        self.units = units
        self.frequency = dict.fromkeys(range(units), 0)
        self.running: set[int] = set()

    def _unit(self, param: str) -> int | None:
        """The unit ``2N`` (se:pb, ch:pb) names, None if there is none."""
        m = re.fullmatch(r"2(\d)", param)
        return int(m.group(1)) if m and int(m.group(1)) < self.units else None

    def set_frequency(self, params: list[str]) -> str | None:
        if len(params) != 2:
            return "er 03"
        unit = self._unit(params[0])
        if unit is None or not re.fullmatch(r"\d{4}", params[1]):
            return "er 04"
        self.frequency[unit] = int(params[1])
        return None

    def switch(self, params: list[str], on: bool) -> str | None:
        if len(params) > 1:
            return "er 03"
        units = set(range(self.units))
        if params:
            if not re.fullmatch(r"\d{3}", params[0]) or not 1 <= int(params[0]) <= self.units:
                return "er 04"
            units = {int(params[0]) - 1}
        self.running = self.running | units if on else self.running - units
        return None

    def read(self, params: list[str]) -> str:
        unit = self._unit(params[0]) if len(params) == 1 else None
        return "er 04" if unit is None else f"pb {self.frequency[unit]:04d}"


def _action_of(op: _Op, *, second_half: bool) -> int:
    """The action register during the first or second half of ``op``."""
    if op.kind == "init":
        return _AFTER_INIT
    if op.kind == "gate":
        return TARGET_TRANSFER << 5 | (ACT_OPEN_GATE if op.gate_open else ACT_CLOSE_GATE)
    if op.kind == "shovel":
        return TARGET_WAIT << 5 | (ACT_EXTEND_SHOVEL if op.gate_open else ACT_RETRACT_SHOVEL)
    if op.kind == "scan":
        return TARGET_STACKER << 5 | ACT_ROTATE
    src, dst = _PATHS[op.kind]
    return _TARGET[dst if second_half else src] << 5 | ACT_ROTATE


def _sensors(
    *,
    carrying: bool,
    shovel_out: bool,
    gate_open: bool,
    ts_occupied: bool,
    door_open: bool,
    target: int | None,
    exposed: bool,
) -> list[str]:
    """The sensors (:data:`cytomat_codes.SENSOR_BITS` names) that read "on" in that state;
    ``target`` is the action register's target while an operation runs, else None."""
    sensors = {
        "shovel_retracted": not shovel_out,
        "shovel_extended": shovel_out,
        "shovel_occupied": carrying,
        "gate_opened": gate_open,
        "gate_closed": not gate_open,
        "transfer_station_occupied": ts_occupied,
        "transfer_station_position_1": True,  # a transfer station that does not turn
        "inner_door_opened": door_open,
        "handler_towards_stacker": target == TARGET_STACKER,
        "handler_towards_gate": target == TARGET_TRANSFER or exposed,
    }
    return [name for name, on in sensors.items() if on]


def _move_refusal(
    src: str, dst: str, shovel_out: bool, exposed: bool, ts: str | None, handler: str | None
) -> str | None:
    """Why a move from ``src`` to ``dst`` cannot start in that state (its reply), or None."""
    if shovel_out:
        return "er 12"
    if exposed != (src == "exposed"):
        return "er 11"
    if src == "ts" and ts is None:
        return "er 31"
    if dst == "ts" and ts is not None:
        return "er 32"
    if src in ("wait", "exposed"):
        return "er 22" if handler is None else None
    return "er 21" if handler is not None else None


class CytomatSim(TransferStationSide):
    """A Cytomat on the wire: ``handle_line`` in, reply out; state from the injected clock.

    ``plates`` is the initial slot occupancy: slot numbers (plates labelled ``plate-N``)
    or a mapping slot -> label. ``faults`` are applied in order (see
    :mod:`labctl.simulators.faults`). ``action_log`` is a JSON-lines file appended per
    completed physical action. Thread-safe: one lock covers every public method.
    """

    def __init__(
        self,
        clock: Clock,
        config: CytomatConfig | None = None,
        *,
        name: str = "cytomat",
        plates: Mapping[int, str] | Iterable[int] = (),
        faults: Sequence[Fault] = (),
        action_log: str | Path | None = None,
        on_change: Callable[[dict[str, Any]], None] | None = None,
    ) -> None:
        self.config = config or CytomatConfig()
        self.name = name
        self._clock = clock
        self._lock = threading.RLock()
        labels = plates if isinstance(plates, Mapping) else {n: f"plate-{n}" for n in plates}
        for slot in labels:
            if not 1 <= slot <= self.config.slots:
                raise ValueError(f"plate slot {slot} is outside 1..{self.config.slots}")
        self._slots: dict[int, str] = dict(labels)
        self._ts: str | None = None
        self._handler: str | None = None  # the plate on the handler at rest
        self._exposed = False  # the handler holds its plate out through the gate
        self._shovel_out = False  # extended by ll:sp 002
        self._op: _Op | None = None
        self._error = 0
        self._warning = 0
        self._gate_open = False
        self._initialised = not self.config.require_init
        self._last_action = _AFTER_INIT if self._initialised else 0
        self._changed_at: datetime | None = None  # last request or hand that may act
        self._seq = 0  # operations started, ever (restored across restarts)
        self._on_change = on_change
        self._shakers = _Shakers(self.config.shaker_units)
        check_codes(
            faults, lambda c: bool(_HEX2.fullmatch(c)), "two upper-case hex digits", "Cytomat"
        )
        self._faults = FaultInjector(faults, device=name)
        self._climate = Climate(self.config.climate, clock.now(), self._faults)
        self._log = ActionLog(action_log)
        self._actions: dict[str, Callable[[list[str], datetime, str], str]] = {
            **{f"mv:{code}": partial(self._mv, code) for code in _MOVES},
            "mv:sn": self._mv_sn,
            "ll:in": self._ll_in,
            "ll:gp": partial(self._ll_two_way, "gate"),
            "ll:sp": partial(self._ll_two_way, "shovel"),
            "ll:it": lambda p, now, _c: self._ll_setpoint("temperature", 50.0, p, now),
            "ll:ic": lambda p, now, _c: self._ll_setpoint("co2", 20.0, p, now),
            "rs:be": self._rs_be,
        }
        if self._shakers.units:
            self._actions |= {
                "se:pb": lambda p, now, _c: self._now(self._shakers.set_frequency(p), now),
                "ll:vi": lambda p, now, _c: self._now("er 03" if p else None, now),
                "ll:va": lambda p, now, _c: self._now(self._shakers.switch(p, True), now),
                "ll:vd": lambda p, now, _c: self._now(self._shakers.switch(p, False), now),
            }
        self._checks: dict[str, Callable[[datetime], str]] = {
            "bs": lambda now: f"{self._overview(now):02X}",
            "be": lambda now: f"{self._error:02X}",
            "bw": lambda now: f"{self._warning:02X}",
            "ba": lambda now: f"{self._action_register(now):02X}",
            "ts": lambda now: f"{self._sensor_register(now):04X}",
            "sw": lambda now: f"1{int(self._ts is not None)}0",
            "it": lambda now: self._climate_reply("temperature", now),
            "ic": lambda now: self._climate_reply("co2", now),
            "ih": lambda now: self._climate_reply("humidity", now),
            "io": lambda now: self._climate_reply("o2", now),
        }

    # -- the wire --------------------------------------------------------------------------

    @property
    def terminator(self) -> bytes:
        """Reply terminator (CR, or CRLF if configured)."""
        return self.config.terminator

    def handle_line(self, line: str) -> str | None:
        """Reply (no terminator) to one request line (no terminator); None = no reply."""
        with self._lock:
            now = self._clock.now()
            return self._faults.serve(now, lambda: self._execute(line, now))

    def break_signal(self) -> None:
        """A Cytomat ignores BREAK."""

    def _execute(self, line: str, now: datetime) -> str:
        self._update(now)
        m = _TELEGRAM.fullmatch(line)
        if m is None:
            return "er 03"
        kind, cmd, params = m.group(1), m.group(2), m.group(3).split()
        if kind != "ch":
            self._changed_at = now
        if kind == "ch":
            if cmd == "pb" and self._shakers.units:  # the one check with a parameter
                return self._shakers.read(params)
            check = self._checks.get(cmd)
            if check is None or (cmd == "io" and "o2" not in self._climate.channels):
                return "er 02"
            if params:
                return "er 03"
            return f"{cmd} {check(now)}"
        action = self._actions.get(f"{kind}:{cmd}")
        if action is None:
            return "er 02"
        if self._op is not None:
            return "er 01"
        reply = action(params, now, line)
        self._changed()
        return reply

    def _changed(self) -> None:
        """Tell ``on_change`` the state now (call with the lock)."""
        if self._on_change is not None:
            self._on_change(cytomat_state(self))

    # -- actions ---------------------------------------------------------------------------

    def _ok(self, now: datetime) -> str:
        self._update(now)  # a zero-length operation has already taken effect
        return f"ok {self._overview(now):02X}"

    def _now(self, refusal: str | None, now: datetime) -> str:
        """The reply to an action that takes effect at once: its refusal, or ``ok XX``."""
        return refusal or self._ok(now)

    def _start(
        self,
        now: datetime,
        kind: str,
        command: str,
        seconds: float,
        *,
        slot: int | None = None,
        plate: str | None = None,
        error: str | None = None,
        gate_open: bool = False,
    ) -> str:
        ends = now + timedelta(seconds=seconds)
        self._seq += 1
        self._op = _Op(kind, command, now, ends, slot, plate, error, gate_open, self._seq)
        return self._ok(now)

    def _refusal(self, src: str, dst: str) -> str | None:
        """Why a move from ``src`` to ``dst`` cannot start now (its reply), or None."""
        return _move_refusal(src, dst, self._shovel_out, self._exposed, self._ts, self._handler)

    def _mv(self, code: str, params: list[str], now: datetime, command: str) -> str:
        kind, src, dst = _MOVES[code]
        slot = None
        if "slot" in (src, dst):
            location = parse_location(params, self.config)
            if isinstance(location, str):
                return location
            slot = location
        elif params:
            return "er 03"
        if not self._initialised:
            return f"er {self.config.not_initialised_code}"
        refusal = self._refusal(src, dst)
        if refusal is not None:
            return refusal
        plate = {"slot": self._slots.get(slot or 0), "ts": self._ts}.get(src, self._handler)
        failure = None
        if src == "slot" and plate is None:
            failure = self.config.slot_empty_code
        elif dst == "slot" and slot in self._slots:
            failure = self.config.slot_occupied_code
        if self._faults.door_open(now):
            return self._start(now, kind, command, 0.0, slot=slot, error=self.config.door_open_code)
        if failure is None:
            failure = self._faults.take_move_error(now)
        if failure is not None:
            return self._start(now, kind, command, self.config.move_s, slot=slot, error=failure)
        # The handler takes the plate now; it arrives when the move ends.
        if src == "slot":
            del self._slots[slot or 0]
        elif src == "ts":
            self._ts = None
        else:
            self._handler, self._exposed = None, False
        return self._start(now, kind, command, self.config.move_s, slot=slot, plate=plate)

    def _mv_sn(self, params: list[str], now: datetime, command: str) -> str:
        if len(params) != 2:
            return "er 03"
        if not all(re.fullmatch(r"\d{3}", p) for p in params):
            return "er 04"
        if not all(1 <= int(p) <= self.config.slots for p in params):
            return "er 05"
        if not self._initialised:
            return f"er {self.config.not_initialised_code}"
        refusal = self._refusal("slot", "wait")
        if refusal is not None:
            return refusal
        return self._start(now, "scan", command, self.config.move_s)

    def _ll_in(self, params: list[str], now: datetime, command: str) -> str:
        if params:
            return "er 03"
        if self._faults.door_open(now):
            return self._start(now, "init", command, 0.0, error=self.config.door_open_code)
        return self._start(now, "init", command, self.config.init_s)

    def _ll_two_way(self, kind: str, params: list[str], now: datetime, command: str) -> str:
        """``ll:gp`` (kind "gate": 001 close, 002 open) and ``ll:sp`` ("shovel": 001
        retract, 002 extend; not while the handler holds a plate out)."""
        if len(params) != 1:
            return "er 03"
        if params[0] not in ("001", "002"):
            return "er 04"
        if kind == "shovel" and self._exposed:
            return "er 11"
        return self._start(now, kind, command, self.config.gate_s, gate_open=params[0] == "002")

    def _ll_setpoint(self, channel: str, top: float, params: list[str], now: datetime) -> str:
        if len(params) != 1:
            return "er 03"
        if not _SETPOINT.fullmatch(params[0]) or float(params[0]) > top:
            return "er 04"
        self._climate.set_setpoint(channel, float(params[0]), now)
        return self._ok(now)

    def _rs_be(self, params: list[str], now: datetime, command: str) -> str:
        if params:
            return "er 03"
        self._error = 0
        return self._ok(now)

    # -- state -----------------------------------------------------------------------------

    def _update(self, now: datetime) -> None:
        """Let the operation in progress take effect if it has ended by ``now`` (once)."""
        op = self._op
        if op is None or now < op.ends:
            return
        self._take_effect(op, log=True)
        self._changed()

    def _take_effect(self, op: _Op, *, log: bool) -> None:
        """The operation ``op`` has ended: the plate is where it went (call with the lock)."""
        self._op = None
        self._last_action = _action_of(op, second_half=True)
        if op.error is not None:
            self._error = int(op.error, 16)
            return
        if op.kind in ("gate", "shovel", "scan"):
            if op.kind == "gate":
                self._gate_open = op.gate_open
            elif op.kind == "shovel":
                self._shovel_out = op.gate_open
            return
        if op.kind == "init":
            self._initialised, self._shovel_out, self._exposed = True, False, False
        else:
            src, dst = _PATHS[op.kind]
            if dst == "slot":
                assert op.slot is not None and op.plate is not None
                self._slots[op.slot] = op.plate
            elif dst == "ts":
                self._ts = op.plate
            else:
                self._handler, self._exposed = op.plate, dst == "exposed"
            if "exposed" in (src, dst):  # the gate opens to hold a plate out, closes after
                self._gate_open = dst == "exposed"
        if log:
            self._log.record(
                PhysicalAction(
                    op.ends, self.name, op.kind, op.command, op.slot, op.plate, seq=op.seq
                )
            )

    def _overview(self, now: datetime) -> int:
        op = self._op
        bits = BUSY if op is not None else READY
        if self._warning:
            bits |= WARNING
        if self._error:
            bits |= ERROR
        if self._handler is not None or (op is not None and op.plate is not None):
            bits |= HANDLER_OCCUPIED
        if self._gate_open:
            bits |= GATE_OPEN
        if self._faults.door_open(now):
            bits |= DEVICE_DOOR_OPEN
        if self._ts is not None:
            bits |= TRANSFER_STATION_OCCUPIED
        return bits

    def _action_register(self, now: datetime) -> int:
        op = self._op
        if op is None:
            return self._last_action
        second_half = now >= op.started + (op.ends - op.started) / 2
        return _action_of(op, second_half=second_half)

    def _sensor_register(self, now: datetime) -> int:
        op = self._op
        on = _sensors(
            carrying=self._handler is not None or (op is not None and bool(op.plate)),
            shovel_out=self._shovel_out or self._exposed,
            gate_open=self._gate_open,
            ts_occupied=self._ts is not None,
            door_open=self._faults.door_open(now),
            target=self._action_register(now) >> 5 if op is not None else None,
            exposed=self._exposed,
        )
        return sum(1 << SENSOR_BITS[name] for name in on)

    def _climate_reply(self, channel: str, now: datetime) -> str:
        fmt = self.config.climate_format.format
        setpoint = self._climate.setpoint(channel)
        return f"{fmt(setpoint)} {fmt(self._climate.actual(channel, now))}"

    # -- the physical side -----------------------------------------------------------------

    def place_on_transfer_station(self, plate: str) -> None:
        """A person or arm puts ``plate`` on the transfer station (it must be free)."""
        with self._lock:
            self._update(self._clock.now())
            op = self._op
            to_ts = op is not None and _PATHS.get(op.kind, ("", ""))[1] == "ts"
            inbound = op.plate if op is not None and to_ts else None
            if self._ts is not None or inbound:
                raise DeviceError(
                    self.name,
                    "place plate on transfer station",
                    f"the transfer station is not free (holds {self._ts or inbound!r})",
                )
            self._ts = plate
            self._changed()

    def take_from_transfer_station(self) -> str:
        """A person or arm takes the plate from the transfer station; returns its label."""
        with self._lock:
            plate = super().take_from_transfer_station()
            self._changed()
            return plate

    def power_cycle(self) -> None:
        """The device is switched off and on again: the operation under way is lost before
        it took effect (a plate on the handler is back where it came from: ASSUMPTION), the
        error register is cleared, and with ``require_init`` it must be initialised again.
        Plates in the slots, on the transfer station and resting on the handler stay."""
        with self._lock:
            now = self._clock.now()
            self._update(now)
            op, self._op = self._op, None
            if op is not None and op.plate is not None:
                src = _PATHS[op.kind][0]
                if src == "slot":
                    assert op.slot is not None
                    self._slots[op.slot] = op.plate
                elif src == "ts":
                    self._ts = op.plate
                else:
                    self._handler = op.plate
            self._error = 0
            self._initialised = not self.config.require_init
            self._last_action = _AFTER_INIT if self._initialised else 0
            self._changed_at = now

    @property
    def slots(self) -> dict[int, str]:
        """Occupied slots as of now: slot number -> plate label (a copy)."""
        with self._lock:
            self._update(self._clock.now())
            return dict(self._slots)

    @property
    def handler(self) -> str | None:
        """Label of the plate resting on the handler (wait or exposed position), as of now."""
        with self._lock:
            self._update(self._clock.now())
            return self._handler

    @property
    def busy(self) -> bool:
        """Whether an operation is in progress now."""
        with self._lock:
            self._update(self._clock.now())
            return self._op is not None

    @property
    def actions(self) -> tuple[PhysicalAction, ...]:
        """Physical actions completed by now, in order (brings the log up to date)."""
        with self._lock:
            self._update(self._clock.now())
            return self._log.entries


# -- surviving a restart -------------------------------------------------------------------

STATE_VERSION = 1


def cytomat_state(sim: CytomatSim) -> dict[str, Any]:
    """What a Cytomat keeps across a restart, as JSON-able data: the slot map, the transfer
    station, the plate resting on the handler (and whether it is held out, the shovel out),
    the operation under way (it ends on the shared clock), the registers, the gate, whether
    the handler is initialised, the operations' count and the climate's setpoints. (The
    shakers' frequencies are not kept.)"""
    with sim._lock:
        op = sim._op
        return {
            "version": STATE_VERSION,
            "device": sim.name,
            "slots": {str(n): label for n, label in sorted(sim._slots.items())},
            "transfer_station": sim._ts,
            "op": None
            if op is None
            else {
                "kind": op.kind,
                "command": op.command,
                "started": op.started.isoformat(),
                "ends": op.ends.isoformat(),
                "slot": op.slot,
                "plate": op.plate,
                "error": op.error,
                "gate_open": op.gate_open,
                "seq": op.seq,
            },
            "handler": sim._handler,
            "exposed": sim._exposed,
            "shovel_out": sim._shovel_out,
            "action_register": sim._last_action,
            "error": sim._error,
            "warning": sim._warning,
            "gate_open": sim._gate_open,
            "initialised": sim._initialised,
            "seq": sim._seq,
            "setpoints": {ch: sim._climate.setpoint(ch) for ch in sim._climate.channels},
        }


def restore_cytomat(sim: CytomatSim, state: Mapping[str, Any]) -> None:
    """Put ``state`` (from :func:`cytomat_state`) back into ``sim``, a new simulator of the
    same device. An operation under way stays under way until its end; one the action log
    already holds (it ended before the state was saved again) takes effect unlogged.
    Raises ValueError for a state of another version or with slots outside the config's."""
    if state.get("version") != STATE_VERSION:
        raise ValueError(f"not a Cytomat state of version {STATE_VERSION}")
    slots = {int(n): str(label) for n, label in dict(state.get("slots") or {}).items()}
    bad = [n for n in slots if not 1 <= n <= sim.config.slots]
    if bad:
        raise ValueError(f"the saved state has slot {bad[0]}, outside 1..{sim.config.slots}")
    raw = state.get("op")
    op = None
    if raw:
        op = _Op(
            str(raw["kind"]),
            str(raw["command"]),
            datetime.fromisoformat(raw["started"]),
            datetime.fromisoformat(raw["ends"]),
            raw.get("slot"),
            raw.get("plate"),
            raw.get("error"),
            bool(raw.get("gate_open")),
            int(raw.get("seq") or 0),
        )
    with sim._lock:
        sim._slots = slots
        ts = state.get("transfer_station")
        sim._ts = None if ts is None else str(ts)
        handler = state.get("handler")
        sim._handler = None if handler is None else str(handler)
        sim._exposed = bool(state.get("exposed"))
        sim._shovel_out = bool(state.get("shovel_out"))
        sim._error = int(state.get("error") or 0)
        sim._warning = int(state.get("warning") or 0)
        sim._gate_open = bool(state.get("gate_open"))
        sim._initialised = bool(state.get("initialised"))
        default_action = _AFTER_INIT if sim._initialised else 0
        sim._last_action = int(state.get("action_register", default_action))
        sim._seq = int(state.get("seq") or 0)
        sim._op = op
        if op is not None and op.seq <= _last_logged_seq(sim._log):
            sim._take_effect(op, log=False)


def _last_logged_seq(log: ActionLog) -> int:
    """The highest operation number in the action log's file (0: none)."""
    if log.path is None or not log.path.exists():
        return 0
    last = 0
    for line in log.path.read_text(encoding="utf-8").splitlines():
        try:
            seq = json.loads(line).get("seq")
        except ValueError:  # a line cut short by a kill: not a logged action
            continue
        if isinstance(seq, int):
            last = max(last, seq)
    return last
