"""Wire-level simulator of a Thermo Fisher Cytomat automated incubator (DEVICES.md section 2).

:class:`CytomatSim` is the device side of the RS-232 line protocol as a pure object:
``handle_line("mv:st 005") -> "ok 11"``. Serve it with :mod:`labctl.simulators.serial_link`
(9600 8N1, replies end with CR, or CRLF if configured). Its state is computed from the
injected clock: a move started at t is busy until t + duration, and every request first
brings the state up to ``clock.now()``; no thread advances it.

Commands emulated (anything else, valid on a real Cytomat or not, answers ``er 02``):

==============  ========================================================================
``mv:st NNN``   slot NNN -> transfer station (``config.move_s``)
``mv:ts NNN``   transfer station -> slot NNN (``config.move_s``)
``ll:in``       initialise the handler (``config.init_s``)
``ll:gp 001``   close / ``002`` open the automatic lift door (gate) (``config.gate_s``)
``ll:it TT.T``  temperature setpoint, degC (0.0-50.0); ``ll:ic CC.C`` CO2 setpoint, %vol
                (0.0-20.0); one or two integer digits and one decimal, e.g. ``05.0``
``rs:be``       clear the error register
``ch:bs``       overview register ``bs XX``; ``ch:be``/``ch:bw``/``ch:ba`` error, warning,
                action registers; ``ch:ts`` sensor register
``ch:it``       ``it <setpoint> <actual>`` temperature; ``ch:ic`` CO2, ``ch:ih`` humidity,
                ``ch:io`` O2 (only when the climate has O2, else ``er 02``)
==============  ========================================================================

Replies: actions answer ``ok XX`` (overview register after the command took effect) or
``er XX``; checks echo their two letters and a value. Registers are two upper-case hex
digits. Checks are answered while busy; any action while busy gets ``er 01``.

Validation order: telegram shape (``er 03``: not ``tt:cc`` with single-space separated
parameters, or wrong number of parameters), known command (``er 02``), busy (``er 01``),
parameter shape (``er 04``: slot not three digits, gate not 001/002, number malformed or
out of range), slot number outside 1..slots (``er 05``), not initialised
(``config.not_initialised_code``), transfer station empty on ``mv:ts`` (``er 31``) or
occupied on ``mv:st`` (``er 32``).

Overview register bits (DEVICES.md 2.3): 0x01 busy, 0x02 ready, 0x04 warning register set,
0x08 error register set, 0x10 handler occupied, 0x20 gate open, 0x40 device door open,
0x80 transfer station occupied.

ASSUMPTIONS (not in the sources; each configurable in :class:`CytomatConfig` where it is a
value):

- Ready (0x02) is set whenever the device is not busy, and clear while busy.
- Moving from an empty slot (``mv:st``) ends after the move duration with error register
  ``02`` (MTP not loaded on shovel); moving into an occupied slot (``mv:ts``) ends with
  ``03`` (MTP not unloaded). The device checks before it picks, so the plate stays where
  it was. The error register (and bit 0x08) stays until ``rs:be``; moves are still
  accepted while it is set.
- Moves before ``ll:in`` after power-up are refused with ``er 11`` (wrong handler
  position); ``require_init=False`` starts initialised.
- A move or ``ll:in`` started while the device door is open fails at once with error
  register ``05``. A move under way when the door opens completes.
- The plate is on the handler (0x10) for the whole of a successful move: it leaves its
  source when the move starts and reaches its destination when the move ends.
- Climate replies use ``{:+05.1f}`` for both numbers: ``it +37.0 +36.9``, ``ic +05.0 +04.9``.
- Action register: high 3 bits target (1 init, 3 stacker, 4 transfer station), low 5 bits
  action (0x01 init, 0x05 move, 0x0C/0x0E close/open door); the target switches from the
  source to the destination half-way through a move. ``00`` when idle.
- Sensor register (``ch:ts``): 0x01 plate on transfer station, 0x02 plate on handler.
- The warning register is always ``00`` (nothing the simulator does raises a warning).

Physical-side API for the plate mover / operator / tests: :meth:`place_on_transfer_station`,
:meth:`take_from_transfer_station`, :attr:`slots`, :attr:`transfer_station`,
:attr:`actions`. Completed moves are recorded once each in the action log
(:class:`~labctl.simulators.faults.ActionLog`): ``init``, ``retrieve`` (slot -> transfer
station), ``store`` (transfer station -> slot), stamped with the virtual completion time
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
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

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

BUSY = 0x01
READY = 0x02
WARNING = 0x04
ERROR = 0x08
HANDLER_OCCUPIED = 0x10
GATE_OPEN = 0x20
DEVICE_DOOR_OPEN = 0x40
TRANSFER_STATION_OCCUPIED = 0x80

_HEX2 = re.compile(r"[0-9A-F]{2}")
# Two-character type and command, then parameters each preceded by exactly one space.
_TELEGRAM = re.compile(r"([^\s:]{2}):([^\s:]{2})((?: [^\s]+)*)")
_SETPOINT = re.compile(r"\d{1,2}\.\d")

# Action register targets (high 3 bits) and actions (low 5 bits).
_TARGET_INIT, _TARGET_STACKER, _TARGET_TRANSFER = 1, 3, 4
_ACT_INIT, _ACT_MOVE, _ACT_CLOSE_DOOR, _ACT_OPEN_DOOR = 0x01, 0x05, 0x0C, 0x0E


@dataclass(frozen=True)
class CytomatConfig:
    """The simulated model: geometry, timing (seconds), reply format and assumed codes."""

    slots: int = 42
    move_s: float = 15.0
    init_s: float = 60.0
    gate_s: float = 3.0
    require_init: bool = True
    terminator: bytes = b"\r"
    climate: ClimateConfig = field(default_factory=ClimateConfig)
    climate_format: str = "{:+05.1f}"
    slot_empty_code: str = "02"
    slot_occupied_code: str = "03"
    door_open_code: str = "05"
    not_initialised_code: str = "11"

    def __post_init__(self) -> None:
        if self.slots < 1 or self.slots > 999:
            raise ValueError(f"slots must be 1..999, got {self.slots}")
        if self.terminator not in (b"\r", b"\r\n"):
            raise ValueError(f"terminator must be CR or CRLF, got {self.terminator!r}")
        if min(self.move_s, self.init_s, self.gate_s) < 0:
            raise ValueError("durations must be >= 0 s")
        codes = ("slot_empty_code", "slot_occupied_code", "door_open_code", "not_initialised_code")
        for name in codes:
            if not _HEX2.fullmatch(getattr(self, name)):
                raise ValueError(f"{name} must be two upper-case hex digits")


@dataclass(frozen=True)
class _Op:
    """An operation in progress: it takes effect at ``ends``."""

    kind: str  # "retrieve" | "store" | "init" | "gate"
    command: str
    started: datetime
    ends: datetime
    slot: int | None = None
    plate: str | None = None  # the plate on the handler (successful moves only)
    error: str | None = None  # error register code set at ``ends``; nothing moves
    gate_open: bool = False
    seq: int = 0  # the operation's number on this device (from 1), in the action log


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
        self._op: _Op | None = None
        self._error = 0
        self._warning = 0
        self._gate_open = False
        self._initialised = not self.config.require_init
        self._changed_at: datetime | None = None  # last request or hand that may act
        self._seq = 0  # operations started, ever (restored across restarts)
        self._on_change = on_change
        check_codes(
            faults, lambda c: bool(_HEX2.fullmatch(c)), "two upper-case hex digits", "Cytomat"
        )
        self._faults = FaultInjector(faults, device=name)
        self._climate = Climate(self.config.climate, clock.now(), self._faults)
        self._log = ActionLog(action_log)
        self._actions: dict[str, Callable[[list[str], datetime, str], str]] = {
            "mv:st": self._mv_st,
            "mv:ts": self._mv_ts,
            "ll:in": self._ll_in,
            "ll:gp": self._ll_gp,
            "ll:it": lambda p, now, _c: self._ll_setpoint("temperature", 50.0, p, now),
            "ll:ic": lambda p, now, _c: self._ll_setpoint("co2", 20.0, p, now),
            "rs:be": self._rs_be,
        }
        self._checks: dict[str, Callable[[datetime], str]] = {
            "bs": lambda now: f"{self._overview(now):02X}",
            "be": lambda now: f"{self._error:02X}",
            "bw": lambda now: f"{self._warning:02X}",
            "ba": lambda now: f"{self._action_register(now):02X}",
            "ts": lambda now: f"{self._sensor_register():02X}",
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

    def _slot_param(self, params: list[str]) -> int | str:
        """The slot number, or the error reply."""
        if len(params) != 1:
            return "er 03"
        if not re.fullmatch(r"\d{3}", params[0]):
            return "er 04"
        slot = int(params[0])
        if not 1 <= slot <= self.config.slots:
            return "er 05"
        return slot

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

    def _start_move(
        self,
        now: datetime,
        kind: str,
        command: str,
        slot: int,
        plate: str | None,
        failure: str | None,
    ) -> str:
        """Start a move; ``failure`` is the error it ends with (then nothing moves)."""
        if self._faults.door_open(now):
            return self._start(now, kind, command, 0.0, slot=slot, error=self.config.door_open_code)
        if failure is None:
            failure = self._faults.take_move_error(now)
        if failure is not None:
            return self._start(now, kind, command, self.config.move_s, slot=slot, error=failure)
        # The handler takes the plate now; it arrives when the move ends.
        if kind == "retrieve":
            del self._slots[slot]
        else:
            self._ts = None
        return self._start(now, kind, command, self.config.move_s, slot=slot, plate=plate)

    def _mv_st(self, params: list[str], now: datetime, command: str) -> str:
        slot = self._slot_param(params)
        if isinstance(slot, str):
            return slot
        if not self._initialised:
            return f"er {self.config.not_initialised_code}"
        if self._ts is not None:
            return "er 32"
        plate = self._slots.get(slot)
        failure = self.config.slot_empty_code if plate is None else None
        return self._start_move(now, "retrieve", command, slot, plate, failure)

    def _mv_ts(self, params: list[str], now: datetime, command: str) -> str:
        slot = self._slot_param(params)
        if isinstance(slot, str):
            return slot
        if not self._initialised:
            return f"er {self.config.not_initialised_code}"
        if self._ts is None:
            return "er 31"
        failure = self.config.slot_occupied_code if slot in self._slots else None
        return self._start_move(now, "store", command, slot, self._ts, failure)

    def _ll_in(self, params: list[str], now: datetime, command: str) -> str:
        if params:
            return "er 03"
        if self._faults.door_open(now):
            return self._start(now, "init", command, 0.0, error=self.config.door_open_code)
        return self._start(now, "init", command, self.config.init_s)

    def _ll_gp(self, params: list[str], now: datetime, command: str) -> str:
        if len(params) != 1:
            return "er 03"
        if params[0] not in ("001", "002"):
            return "er 04"
        return self._start(now, "gate", command, self.config.gate_s, gate_open=params[0] == "002")

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
        if op.error is not None:
            self._error = int(op.error, 16)
            return
        if op.kind == "gate":
            self._gate_open = op.gate_open
            return
        if op.kind == "retrieve":
            self._ts = op.plate
        elif op.kind == "store":
            assert op.slot is not None and op.plate is not None
            self._slots[op.slot] = op.plate
        else:
            self._initialised = True
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
        if op is not None and op.plate is not None:
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
            return 0
        if op.kind == "init":
            return _TARGET_INIT << 5 | _ACT_INIT
        if op.kind == "gate":
            return _TARGET_TRANSFER << 5 | (_ACT_OPEN_DOOR if op.gate_open else _ACT_CLOSE_DOOR)
        second_half = now >= op.started + (op.ends - op.started) / 2
        to_transfer = (op.kind == "retrieve") == second_half
        return (_TARGET_TRANSFER if to_transfer else _TARGET_STACKER) << 5 | _ACT_MOVE

    def _sensor_register(self) -> int:
        on_handler = self._op is not None and self._op.plate is not None
        return (0x01 if self._ts is not None else 0) | (0x02 if on_handler else 0)

    def _climate_reply(self, channel: str, now: datetime) -> str:
        fmt = self.config.climate_format.format
        setpoint = self._climate.setpoint(channel)
        return f"{fmt(setpoint)} {fmt(self._climate.actual(channel, now))}"

    # -- the physical side -----------------------------------------------------------------

    def place_on_transfer_station(self, plate: str) -> None:
        """A person or arm puts ``plate`` on the transfer station (it must be free)."""
        with self._lock:
            self._update(self._clock.now())
            inbound = self._op is not None and self._op.kind == "retrieve" and self._op.plate
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
        Plates in the slots and on the transfer station stay where they are."""
        with self._lock:
            now = self._clock.now()
            self._update(now)
            op, self._op = self._op, None
            if op is not None and op.plate is not None:
                if op.kind == "retrieve":
                    assert op.slot is not None
                    self._slots[op.slot] = op.plate
                else:
                    self._ts = op.plate
            self._error = 0
            self._initialised = not self.config.require_init
            self._changed_at = now

    @property
    def slots(self) -> dict[int, str]:
        """Occupied slots as of now: slot number -> plate label (a copy)."""
        with self._lock:
            self._update(self._clock.now())
            return dict(self._slots)

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
    station, the operation under way (it ends on the shared clock), the registers, the gate,
    whether the handler is initialised, the operations' count and the climate's setpoints."""
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
        sim._error = int(state.get("error") or 0)
        sim._warning = int(state.get("warning") or 0)
        sim._gate_open = bool(state.get("gate_open"))
        sim._initialised = bool(state.get("initialised"))
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
