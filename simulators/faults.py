"""Injected faults, and the simulated surroundings both incubator simulators share.

This module holds three small things the Cytomat and LiCONiC simulators both use:

- :class:`Fault` (frozen data) and :func:`load_faults` / :func:`parse_faults`, the fault
  scenario format below; :class:`FaultInjector`, which applies a list of faults to one
  simulator as requests arrive and virtual time passes;
- :class:`Climate`, setpoints and actual values that drift deterministically toward their
  target (the setpoint, moved by a ``co2_out_of_range`` fault);
- :class:`ActionLog`, the JSON-lines record of physical actions (ground truth for tests).

Scenario format (YAML, read with ``yaml.safe_load``)
----------------------------------------------------
A scenario is a list of faults, or a mapping whose only key ``faults`` holds that list::

    faults:
      - device: inc-1               # optional: only the simulator named so applies it
        fault: error_code           # required: the kind, see below
        after_commands: 12          # trigger: after 12 request lines (the 13th is hit)
        code: "05"                  # the device's own code, quoted
      - fault: co2_out_of_range
        at: "2026-12-03T09:00:00Z"  # trigger: a moment of (virtual) time, with a zone
        duration: 10 min
        co2_offset: 2.0             # %vol; actual CO2 drifts toward setpoint + 2.0
      - fault: no_reply
        after_commands: 0           # from the very first request
        count: 2                    # the first two requests get no reply
        lost: reply                 # ...although the device executes them

Fields (any other key is an error):

``fault`` (required)
    ``no_reply``: the simulator sends nothing. ``garbled_reply``: the reply is replaced by
    seeded random bytes (never CR or LF) followed by the normal terminator.
    ``error_code``: the next move(s) fail with this device error (Cytomat: error register
    and bit 0x08; LiCONiC: flag 1814 and DM200); the plate stays where it was.
    ``door_open``: the device door is open (Cytomat bit 0x40; moves and init started then
    fail at once). ``co2_out_of_range``: the actual CO2 drifts toward setpoint + offset.
``device``
    Name of the simulator the fault is for; omitted: every simulator given it applies it.
``at`` / ``after_commands`` (exactly one)
    When the fault's window opens: at an ISO 8601 time with a zone (a YAML timestamp is
    accepted), or when request line number ``after_commands + 1`` arrives (so 0 means the
    first request). Every line a simulator receives counts, malformed ones included.
``duration``
    Length of the window: a number of seconds, or ``"<number> <unit>"`` with unit s, min,
    h or d (e.g. ``"10 min"``). Omitted: the window never closes.
``count``
    ``no_reply`` / ``garbled_reply`` / ``error_code`` only: how many replies (moves) in the
    window are hit. Default: 1 without a duration, every one inside a duration.
``code``
    ``error_code`` only, required, a quoted string: a Cytomat error-register code (two hex
    digits, e.g. ``"05"``) or a LiCONiC DM200 code (up to five digits, e.g. ``"00007"``).
    The simulator checks the shape when it is given the fault.
``co2_offset``
    ``co2_out_of_range`` only, required: %vol added to the CO2 setpoint as drift target.
``lost``
    ``no_reply`` only: ``request`` (default: the command is lost, not executed) or
    ``reply`` (the command is executed, its reply is lost: the case where a controller
    cannot know whether a move happened).
``seed``
    ``garbled_reply`` only: integer seed of the junk generator (default 0).

Invalid scenarios raise :class:`FaultSpecError` (a ``ValueError``) naming the fault's
index and the field.
"""

from __future__ import annotations

import json
import math
import random
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from pathlib import Path

import yaml

from labctl.clock import utc
from labctl.errors import DeviceError, LabctlError

__all__ = [
    "ActionLog",
    "TransferStationSide",
    "Climate",
    "ClimateConfig",
    "Fault",
    "FaultInjector",
    "FaultKind",
    "FaultSpecError",
    "PhysicalAction",
    "ReplyFault",
    "check_codes",
    "load_faults",
    "parse_duration",
    "parse_faults",
]


class FaultSpecError(LabctlError, ValueError):
    """A fault scenario is invalid; ``field`` names the offending field."""

    def __init__(self, message: str, *, field: str, index: int | None = None) -> None:
        self.field = field
        self.index = index
        self.reason = message
        where = f"fault {index}: " if index is not None else ""
        super().__init__(f"{where}field '{field}': {message}")


class FaultKind(str, Enum):
    """What goes wrong."""

    NO_REPLY = "no_reply"
    GARBLED_REPLY = "garbled_reply"
    ERROR_CODE = "error_code"
    DOOR_OPEN = "door_open"
    CO2_OUT_OF_RANGE = "co2_out_of_range"


_REPLY_KINDS = (FaultKind.NO_REPLY, FaultKind.GARBLED_REPLY)
_COUNTED_KINDS = (*_REPLY_KINDS, FaultKind.ERROR_CODE)


@dataclass(frozen=True)
class Fault:
    """One injected fault (see the module docstring for the meaning of each field)."""

    kind: FaultKind
    device: str | None = None
    at: datetime | None = None
    after_commands: int | None = None
    duration_s: float | None = None
    count: int | None = None
    code: str | None = None
    co2_offset: float | None = None
    lost: str = "request"
    seed: int = 0

    def __post_init__(self) -> None:
        if (self.at is None) == (self.after_commands is None):
            raise FaultSpecError("give exactly one of 'at' and 'after_commands'", field="at")
        if self.at is not None:
            if self.at.tzinfo is None:
                raise FaultSpecError("a time needs a zone, e.g. '...T09:00:00Z'", field="at")
            object.__setattr__(self, "at", utc(self.at))
        if self.after_commands is not None and self.after_commands < 0:
            raise FaultSpecError("must be an integer >= 0", field="after_commands")
        if self.duration_s is not None and not self.duration_s > 0:
            raise FaultSpecError("must be a positive duration", field="duration")
        if self.count is not None:
            if self.kind not in _COUNTED_KINDS:
                raise FaultSpecError(f"not used by '{self.kind.value}'", field="count")
            if self.count < 1:
                raise FaultSpecError("must be an integer >= 1", field="count")
        if (self.code is not None) != (self.kind is FaultKind.ERROR_CODE):
            raise FaultSpecError("required by error_code and used by nothing else", field="code")
        if (self.co2_offset is not None) != (self.kind is FaultKind.CO2_OUT_OF_RANGE):
            raise FaultSpecError(
                "required by co2_out_of_range and used by nothing else", field="co2_offset"
            )
        if self.lost not in ("request", "reply"):
            raise FaultSpecError("must be 'request' or 'reply'", field="lost")
        if self.lost != "request" and self.kind is not FaultKind.NO_REPLY:
            raise FaultSpecError("used by no_reply only", field="lost")

    @property
    def window_hits(self) -> int | None:
        """Replies or moves hit in the window (None = all); conditions are never counted."""
        if self.kind not in _COUNTED_KINDS:
            return None
        if self.count is not None:
            return self.count
        return 1 if self.duration_s is None else None


_FIELDS = {
    "fault",
    "device",
    "at",
    "after_commands",
    "duration",
    "count",
    "code",
    "co2_offset",
    "lost",
    "seed",
}
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(s|sec|min|h|d)\s*")
_UNIT_S = {"s": 1.0, "sec": 1.0, "min": 60.0, "h": 3600.0, "d": 86400.0}


def parse_duration(value: object, *, index: int | None = None) -> float:
    """Seconds from ``30``, ``30.5``, ``"30 s"``, ``"10 min"``, ``"2 h"`` or ``"1 d"``."""
    if isinstance(value, bool):
        raise FaultSpecError("must be seconds or e.g. '10 min'", field="duration", index=index)
    if isinstance(value, int | float):
        return float(value)
    if isinstance(value, str):
        m = _DURATION.fullmatch(value)
        if m:
            return float(m.group(1)) * _UNIT_S[m.group(2)]
    raise FaultSpecError(
        f"{value!r} is not a duration (seconds, or e.g. '10 min', '2 h')",
        field="duration",
        index=index,
    )


def _int_field(raw: Mapping[str, object], name: str, index: int) -> int | None:
    value = raw.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise FaultSpecError(f"must be an integer, got {value!r}", field=name, index=index)
    return value


def _fault_from_mapping(raw: object, index: int) -> Fault:
    if not isinstance(raw, Mapping):
        raise FaultSpecError("each fault must be a mapping", field="fault", index=index)
    unknown = sorted(str(k) for k in raw if k not in _FIELDS)
    if unknown:
        raise FaultSpecError(
            f"unknown field (known: {', '.join(sorted(_FIELDS))})", field=unknown[0], index=index
        )
    kind_raw = raw.get("fault")
    try:
        kind = FaultKind(kind_raw)
    except ValueError:
        kinds = ", ".join(k.value for k in FaultKind)
        raise FaultSpecError(
            f"{kind_raw!r} is not a fault kind (one of {kinds})", field="fault", index=index
        ) from None
    at = raw.get("at")
    if isinstance(at, str):
        try:
            at = datetime.fromisoformat(at)
        except ValueError:
            raise FaultSpecError(
                f"{at!r} is not an ISO 8601 time", field="at", index=index
            ) from None
    elif at is not None and not isinstance(at, datetime):
        raise FaultSpecError(f"{at!r} is not a time", field="at", index=index)
    for name in ("device", "code", "lost"):
        value = raw.get(name)
        if value is not None and not isinstance(value, str):
            raise FaultSpecError(
                f"must be a (quoted) string, got {value!r}", field=name, index=index
            )
    offset = raw.get("co2_offset")
    if offset is not None and (isinstance(offset, bool) or not isinstance(offset, int | float)):
        raise FaultSpecError(
            f"must be a number (%vol), got {offset!r}", field="co2_offset", index=index
        )
    duration = raw.get("duration")
    try:
        return Fault(
            kind=kind,
            device=raw.get("device"),
            at=at,
            after_commands=_int_field(raw, "after_commands", index),
            duration_s=None if duration is None else parse_duration(duration, index=index),
            count=_int_field(raw, "count", index),
            code=raw.get("code"),
            co2_offset=None if offset is None else float(offset),
            lost=raw.get("lost") or "request",
            seed=_int_field(raw, "seed", index) or 0,
        )
    except FaultSpecError as exc:
        raise FaultSpecError(exc.reason, field=exc.field, index=index) from None


def parse_faults(data: object) -> tuple[Fault, ...]:
    """Faults from already-loaded YAML data: a list, or ``{faults: [...]}``, or None."""
    if data is None:
        return ()
    if isinstance(data, Mapping):
        extra = sorted(str(k) for k in data if k != "faults")
        if extra:
            raise FaultSpecError("a scenario mapping has only the key 'faults'", field=extra[0])
        data = data.get("faults") or []
    if not isinstance(data, list):
        raise FaultSpecError("a scenario is a list of faults", field="faults")
    return tuple(_fault_from_mapping(item, i) for i, item in enumerate(data))


def load_faults(source: str | Path) -> tuple[Fault, ...]:
    """Faults from a YAML file (a ``Path``) or YAML text (a ``str``)."""
    text = source.read_text(encoding="utf-8") if isinstance(source, Path) else source
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise FaultSpecError(f"not valid YAML: {exc}", field="faults") from None
    return parse_faults(data)


@dataclass(frozen=True)
class ReplyFault:
    """What happens to the reply of one request (from :meth:`FaultInjector.take_reply_fault`)."""

    kind: FaultKind
    lost_request: bool  # the command itself is lost: do not execute it
    junk: str = ""  # garbled_reply: the reply to send instead (latin-1 characters, no CR/LF)


@dataclass
class _Armed:
    """Runtime state of one fault: when its window opened and how many hits remain."""

    fault: Fault
    start: datetime | None
    remaining: int | None
    rng: random.Random
    last_hit: datetime | None = None  # when it last changed a reply or a move

    @property
    def end(self) -> datetime | None:
        if self.start is None or self.fault.duration_s is None:
            return None
        return self.start + timedelta(seconds=self.fault.duration_s)

    def active(self, now: datetime) -> bool:
        if self.start is None or now < self.start:
            return False
        end = self.end
        if end is not None and now >= end:
            return False
        return self.remaining is None or self.remaining > 0


# Junk bytes for garbled replies: anything but the terminator characters, so the reply
# still frames as one line and the client sees a well-framed but meaningless answer.
_JUNK_ALPHABET = [chr(b) for b in range(256) if b not in (0x0A, 0x0D)]


class FaultInjector:
    """Applies faults to one simulator. Not thread-safe: the simulator's lock covers it.

    The simulator calls :meth:`request` once per request line, then asks what applies at
    its ``now``. Everything is a function of the request count and the times passed in,
    so a run with a VirtualClock is reproducible.
    """

    def __init__(self, faults: Iterable[Fault] = (), *, device: str) -> None:
        self._armed = [
            _Armed(f, f.at, f.window_hits, random.Random(f.seed))
            for f in faults
            if f.device is None or f.device == device
        ]
        self._requests = 0

    @property
    def faults(self) -> tuple[Fault, ...]:
        """The faults this simulator applies (those for other devices are dropped)."""
        return tuple(a.fault for a in self._armed)

    def request(self, now: datetime) -> None:
        """Count one request line received at ``now``; opens command-triggered windows."""
        self._requests += 1
        for a in self._armed:
            after = a.fault.after_commands
            if a.start is None and after is not None and self._requests > after:
                a.start = now

    def serve(self, now: datetime, execute: Callable[[], str]) -> str | None:
        """Count one request at ``now`` and run ``execute`` for its reply, as faults allow.

        A ``no_reply`` fault that loses the request skips ``execute`` and returns None; one
        that loses the reply runs it and returns None; ``garbled_reply`` runs it and
        returns junk instead.
        """
        self.request(now)
        fault = self.take_reply_fault(now)
        if fault is not None and fault.lost_request:
            return None
        reply = execute()
        if fault is None:
            return reply
        return None if fault.kind is FaultKind.NO_REPLY else fault.junk

    def take_reply_fault(self, now: datetime) -> ReplyFault | None:
        """The reply fault hitting the current request, if any (uses up one hit)."""
        for a in self._armed:
            if a.fault.kind in _REPLY_KINDS and a.active(now):
                a.last_hit = now
                if a.remaining is not None:
                    a.remaining -= 1
                if a.fault.kind is FaultKind.NO_REPLY:
                    return ReplyFault(FaultKind.NO_REPLY, lost_request=a.fault.lost == "request")
                junk = "".join(a.rng.choices(_JUNK_ALPHABET, k=a.rng.randint(3, 12)))
                return ReplyFault(FaultKind.GARBLED_REPLY, lost_request=False, junk=junk)
        return None

    def take_move_error(self, now: datetime) -> str | None:
        """The error code a move started at ``now`` ends with, if a fault says so (uses a hit)."""
        for a in self._armed:
            if a.fault.kind is FaultKind.ERROR_CODE and a.active(now):
                a.last_hit = now
                if a.remaining is not None:
                    a.remaining -= 1
                return a.fault.code
        return None

    def door_open(self, now: datetime) -> bool:
        """Whether a door_open fault holds the device door open at ``now``."""
        return any(a.fault.kind is FaultKind.DOOR_OPEN and a.active(now) for a in self._armed)

    def climate_offset(self, channel: str, at: datetime) -> float:
        """Amount added to ``channel``'s setpoint to get its drift target at ``at``."""
        if channel != "co2":
            return 0.0
        return sum(
            a.fault.co2_offset or 0.0
            for a in self._armed
            if a.fault.kind is FaultKind.CO2_OUT_OF_RANGE and a.active(at)
        )

    def quiet(self, since: datetime, now: datetime) -> bool:
        """Whether no fault can have acted in ``[since, now]``: none hit a reply or a move
        in it (the check made at ``since`` may have been the one hit), none waits for a
        request count to open, and none with hits left has a window overlapping it."""
        for a in self._armed:
            if a.last_hit is not None and a.last_hit >= since:
                return False
            if a.remaining == 0:
                continue
            if a.start is None:
                if a.fault.after_commands is not None:
                    return False  # it opens on some request: the next one may be a check's
                continue
            end = a.end
            if a.start <= now and (end is None or end >= since):
                return False
        return True

    def next_change(self, now: datetime) -> datetime | None:
        """The next moment a fault window opens or closes after ``now``; ``now`` itself
        while a fault is open or waits for a request count; None if no fault is left."""
        nxt: datetime | None = None
        for a in self._armed:
            if a.remaining == 0:
                continue
            if a.start is None:
                if a.fault.after_commands is not None:
                    return now
                continue
            if a.active(now):
                return now
            for t in (a.start, a.end):
                if t is not None and t > now and (nxt is None or t < nxt):
                    nxt = t
        return nxt

    def climate_changes(self, after: datetime, until: datetime) -> list[datetime]:
        """Sorted moments in (after, until] where a climate offset starts or stops."""
        times = set()
        for a in self._armed:
            if a.fault.kind is FaultKind.CO2_OUT_OF_RANGE:
                for t in (a.start, a.end):
                    if t is not None and after < t <= until:
                        times.add(t)
        return sorted(times)


# -- climate -----------------------------------------------------------------------------

# A channel within this of its target reads the same on the wire (0.1 resolution) for as
# long as the target holds, so an alarm check could not see it change.
SETTLED_EPS = 1e-3

_DEFAULT_TIME_CONSTANTS_S = {"temperature": 900.0, "co2": 300.0, "humidity": 1800.0, "o2": 600.0}


@dataclass(frozen=True)
class ClimateConfig:
    """Climate of a simulated incubator.

    Setpoints: temperature in degC, co2 and o2 in %vol, humidity in %RH; ``o2=None`` means
    no O2 control. ``initial`` gives actual values at start-up per channel (default: the
    setpoint). ``time_constants`` (seconds per channel) set how fast an actual value
    approaches its target: exponentially, 63 % of the gap closed per time constant.
    """

    temperature: float = 37.0
    co2: float = 5.0
    humidity: float = 95.0
    o2: float | None = None
    initial: Mapping[str, float] = field(default_factory=dict)
    time_constants: Mapping[str, float] = field(
        default_factory=lambda: dict(_DEFAULT_TIME_CONSTANTS_S)
    )


@dataclass
class _Channel:
    setpoint: float
    value: float
    tau_s: float
    # Where the current approach began: the moment its target was set, and the gap then
    # (value - target). The settling moment follows from these exactly, without reading
    # it back from a gap that has shrunk to rounding noise.
    since: datetime | None = None
    target: float | None = None
    gap: float = 0.0

    def aim(self, target: float, at: datetime) -> None:
        """Note that from ``at`` the value approaches ``target`` (no-op if it already does)."""
        if target != self.target:
            self.since, self.target, self.gap = at, target, self.value - target

    def settled_at(self, eps: float) -> datetime | None:
        """From when on the value stays within ``eps`` of the target (None: never set)."""
        if self.since is None or abs(self.gap) <= eps:
            return self.since
        return self.since + timedelta(seconds=self.tau_s * math.log(abs(self.gap) / eps))


class Climate:
    """Setpoints and actual values, advanced lazily to the time asked about.

    Between two moments the target (setpoint + fault offset) is constant, so each actual
    value follows ``target + (value - target) * exp(-dt / tau)`` exactly; the injector
    tells where the target changes. Deterministic: no noise. Times must not go backwards.
    """

    def __init__(self, config: ClimateConfig, start: datetime, injector: FaultInjector) -> None:
        setpoints = {
            "temperature": config.temperature,
            "co2": config.co2,
            "humidity": config.humidity,
        }
        if config.o2 is not None:
            setpoints["o2"] = config.o2
        taus = {**_DEFAULT_TIME_CONSTANTS_S, **config.time_constants}
        self._channels = {
            name: _Channel(sp, float(config.initial.get(name, sp)), taus[name])
            for name, sp in setpoints.items()
        }
        self._since = start
        self._injector = injector
        self._aim(start)

    def _aim(self, at: datetime) -> None:
        for name, ch in self._channels.items():
            ch.aim(ch.setpoint + self._injector.climate_offset(name, at), at)

    @property
    def channels(self) -> tuple[str, ...]:
        """Names of the channels this climate has."""
        return tuple(self._channels)

    def setpoint(self, channel: str) -> float:
        """The setpoint of ``channel`` (units per :class:`ClimateConfig`)."""
        return self._channels[channel].setpoint

    def set_setpoint(self, channel: str, value: float, now: datetime) -> None:
        """Change a setpoint at ``now``; the actual value starts drifting toward it."""
        self._advance(now)
        self._channels[channel].setpoint = value
        self._aim(now)

    def actual(self, channel: str, now: datetime) -> float:
        """The actual value of ``channel`` at ``now``."""
        self._advance(now)
        return self._channels[channel].value

    def settled_since(self, now: datetime, eps: float = SETTLED_EPS) -> datetime | None:
        """The moment from which every channel has stayed within ``eps`` of its target, if
        all are now (None: one is still drifting toward it)."""
        self._advance(now)
        since = datetime.min.replace(tzinfo=now.tzinfo)
        for ch in self._channels.values():
            at = ch.settled_at(eps)
            if at is None or at > now:
                return None
            since = max(since, at)
        return since

    def _advance(self, now: datetime) -> None:
        for t in [*self._injector.climate_changes(self._since, now), now]:
            if t <= self._since:
                continue
            dt = (t - self._since).total_seconds()
            for name, ch in self._channels.items():
                # The target on [since, t) is the one in force at `since`: changes only
                # happen at the listed moments.
                target = ch.setpoint + self._injector.climate_offset(name, self._since)
                ch.value = target + (ch.value - target) * math.exp(-dt / ch.tau_s)
            self._since = t
            self._aim(t)  # a fault edge at t moves the target


# -- physical action log -------------------------------------------------------------------


@dataclass(frozen=True)
class PhysicalAction:
    """One completed physical action of a simulated device.

    ``action`` is ``init`` (handler initialised), ``retrieve`` (plate moved from a slot to
    the transfer station) or ``store`` (plate moved from the transfer station to a slot).
    ``time`` is the virtual moment the action completed. ``cassette``/``level`` are set
    by the LiCONiC simulator only.
    """

    time: datetime
    device: str
    action: str
    command: str
    slot: int | None = None
    plate: str | None = None
    cassette: int | None = None
    level: int | None = None
    seq: int | None = None  # the operation's number on its device, where it counts them

    def to_json(self) -> str:
        """One JSON object on one line; keys in a fixed order, cassette/level and seq only
        if set."""
        data: dict[str, object] = {
            "time": self.time.isoformat(),
            "device": self.device,
            "action": self.action,
            "slot": self.slot,
            "plate": self.plate,
            "command": self.command,
        }
        if self.cassette is not None:
            data["cassette"] = self.cassette
            data["level"] = self.level
        if self.seq is not None:
            data["seq"] = self.seq
        return json.dumps(data)


class ActionLog:
    """Keeps physical actions in memory and appends each as a JSON line to ``path``.

    The file is opened, appended and closed per action, so a reader (or a crash) never
    sees half a line buffered. Callers serialise access (the simulator's lock).
    """

    def __init__(self, path: str | Path | None = None) -> None:
        self.path = Path(path) if path is not None else None
        self._entries: list[PhysicalAction] = []

    def record(self, action: PhysicalAction) -> None:
        """Add one action (exactly once per completed action: the caller ensures it)."""
        self._entries.append(action)
        if self.path is not None:
            with self.path.open("a", encoding="utf-8") as f:
                f.write(action.to_json() + "\n")

    @property
    def entries(self) -> tuple[PhysicalAction, ...]:
        return tuple(self._entries)


def check_codes(
    faults: Sequence[Fault], valid: Callable[[str], bool], shape: str, device: str
) -> None:
    """Raise FaultSpecError if an error_code fault's code does not fit ``device``."""
    for i, f in enumerate(faults):
        if f.kind is FaultKind.ERROR_CODE and not valid(f.code or ""):
            raise FaultSpecError(
                f"{f.code!r} is not a {device} code ({shape})", field="code", index=i
            )


class TransferStationSide:
    """What both incubator simulators share: the physical side of the transfer station,
    and what a dry run may sleep through (labctl.devices.QuietWatch).

    Needs ``name``, ``_lock``, ``_clock``, ``_ts`` (the plate there, or None), ``_op`` (the
    operation under way, or None), ``_faults``, ``_climate``, ``_changed_at`` (the last
    request or hand that may act) and ``_update(now)`` (brings the simulated state up to
    ``now``) on the class using it.
    """

    name: str
    _ts: str | None
    _op: object | None
    _faults: FaultInjector
    _climate: Climate
    _changed_at: datetime | None

    def quiet_since(self, since: datetime) -> bool:
        """Whether an alarm check (status, climate, a reply at all) can only read now what
        it read at ``since``: no operation under way, no request but reads since then, no
        fault able to act, the climate settled."""
        with self._lock:  # type: ignore[attr-defined]
            now = self._clock.now()  # type: ignore[attr-defined]
            self._update(now)  # type: ignore[attr-defined]
            if self._op is not None or not self._faults.quiet(since, now):
                return False
            if self._changed_at is not None and self._changed_at >= since:
                return False
            settled = self._climate.settled_since(now)
            return settled is not None and settled <= since

    def next_change(self) -> datetime | None:
        """Now while an operation runs, a fault acts or the climate drifts; else the next
        fault window edge (None: nothing changes before a request)."""
        with self._lock:  # type: ignore[attr-defined]
            now = self._clock.now()  # type: ignore[attr-defined]
            self._update(now)  # type: ignore[attr-defined]
            if self._op is not None or self._climate.settled_since(now) is None:
                return now
            return self._faults.next_change(now)

    def take_from_transfer_station(self) -> str:
        """A person or arm takes the plate from the transfer station; returns its label."""
        with self._lock:  # type: ignore[attr-defined]
            self._update(self._clock.now())  # type: ignore[attr-defined]
            if self._ts is None:
                raise DeviceError(
                    self.name, "take plate from transfer station", "the transfer station is empty"
                )
            plate, self._ts = self._ts, None
            return plate

    @property
    def transfer_station(self) -> str | None:
        """Label of the plate on the transfer station, None if empty (as of now)."""
        with self._lock:  # type: ignore[attr-defined]
            self._update(self._clock.now())  # type: ignore[attr-defined]
            return self._ts
