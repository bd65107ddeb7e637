"""What a Thermo Cytomat says on the wire: models, registers, error codes, slot addresses.

The tables the simulator (:mod:`labctl.simulators.cytomat`) answers from, kept apart from
its state machine. Sources (see /work/notes/devices-cytomat.md for each fact): the vendor
table copied into PyLabRobot's ``storage/cytomat/{constants,errors}.py`` (0.2.2, unchanged
on main to 2026) and open-cytomat's ``status.py``/``errors.py``; where they disagree or say
nothing, the choice is marked ASSUMPTION.

Registers are hexadecimal, upper-case, fixed width: the overview (``ch:bs``, ``ok XX``),
error (``ch:be``), warning (``ch:bw``) and action (``ch:ba``) registers are one byte (two
digits); the sensor register (``ch:ts``) has 15 bits, so four digits (ASSUMPTION on the
width: no source shows a reply). Bit n of a register is the bit of value ``1 << n``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from .faults import ClimateConfig

__all__ = [
    "ADDRESSING",
    "BUSY",
    "DEVICE_DOOR_OPEN",
    "ERROR",
    "ERROR_REGISTER",
    "GATE_OPEN",
    "HANDLER_OCCUPIED",
    "MODELS",
    "READY",
    "SENSOR_BITS",
    "TELEGRAM_ERRORS",
    "TRANSFER_STATION_OCCUPIED",
    "WARNING",
    "WARNING_REGISTER",
    "CytomatConfig",
    "parse_location",
]

# Overview register (ch:bs and every "ok XX"): the manual's example 0xC5 is busy + warning
# + device door open + transfer station occupied (open-cytomat test_status.py, "PDF p. 11").
BUSY = 0x01
READY = 0x02
WARNING = 0x04
ERROR = 0x08
HANDLER_OCCUPIED = 0x10
GATE_OPEN = 0x20
DEVICE_DOOR_OPEN = 0x40
TRANSFER_STATION_OCCUPIED = 0x80

# Sensor register (ch:ts), bit n as numbered in the vendor table (PLR SensorRegister).
SENSOR_BITS: dict[str, int] = {
    "init_sensor_height_motor": 0,
    "init_sensor_carousel": 1,
    "shovel_retracted": 2,
    "shovel_extended": 3,
    "shovel_occupied": 4,
    "gate_opened": 5,
    "gate_closed": 6,
    "transfer_station_occupied": 7,
    "transfer_station_position_1": 8,
    "transfer_station_position_2": 9,
    "inner_door_opened": 10,
    "carousel_position": 11,
    "handler_towards_stacker": 12,
    "handler_towards_gate": 13,
    "transfer_station_second_plate_occupied": 14,
}

# Action register (ch:ba): bits 7-5 the target, bits 4-0 the step under way.
TARGET_INIT, TARGET_WAIT, TARGET_STACKER, TARGET_TRANSFER = 1, 2, 3, 4
ACT_HEIGHT_MINUS = 0x01
ACT_ROTATE = 0x05
ACT_EXTEND_SHOVEL = 0x07
ACT_RETRACT_SHOVEL = 0x0A
ACT_CLOSE_GATE = 0x0C
ACT_OPEN_GATE = 0x0E

# Immediate replies "er XX" (PLR errors.error_map, open-cytomat errors.py; 61 only there).
TELEGRAM_ERRORS: dict[str, str] = {
    "01": "device busy, new command not accepted",
    "02": "command unknown",
    "03": "telegram structure error",
    "04": "incorrect parameter in telegram",
    "05": "unknown location number",
    "11": "incorrect handler (start) position",
    "12": "command cannot be executed as the shovel is extended",
    "21": "handler already occupied",
    "22": "handler empty",
    "31": "transfer station empty",
    "32": "transfer station occupied",
    "33": "transfer station not in position",
    "41": "automatic lift door not configured",
    "42": "automatic lift door not open",
    "51": "error while accessing internal memory",
    "52": "incorrect password / unauthorised access",
    "61": "shaker not active",
}

# Error register (ch:be), latched during execution (overview bit 0x08) until rs:be.
ERROR_REGISTER: dict[str, str] = {
    "00": "no error",
    "01": "communication with motor controllers interrupted",
    "02": "MTP not loaded on handler shovel",
    "03": "MTP not unloaded from handler shovel",
    "04": "shovel not extended (automatic unit position error)",
    "05": "process timeout",
    "06": "automatic lift door not open",
    "07": "automatic lift door not closed",
    "08": "shovel not retracted",
    "0A": "stepper motor controller temperature too high",
    "0B": "other stepper motor controller error",
    "0C": "transfer station not rotated",
    "0D": "communication with heating controllers and gas supply disturbed",
    "0E": "shaker communication disrupted",
    "0F": "shaker configuration out of order",
    "10": "shaker not started",
    "13": "shaker clamp not open",
    "14": "shaker clamp not closed",
    "FF": "fatal error during the error routine",
}

# Warning register (ch:bw).
WARNING_REGISTER: dict[str, str] = {
    "00": "no warning",
    "01": "communication with motor controllers interrupted",
    "02": "MTP not loaded on handler shovel",
    "03": "MTP not unloaded from handler shovel",
    "04": "shovel not extended (handler movement error)",
    "05": "process timeout",
    "06": "automatic lift door not open",
    "07": "automatic lift door not closed",
    "08": "shovel not retracted",
    "09": "initialisation due to opened device door",
    "0C": "transfer station not rotated",
    "0D": "other motor fault (init Phytron)",
    "0E": "reinitialisation of the carousel",
}

# The models PyLabRobot drives (CytomatBackend.supported_models) and how each addresses a
# storage location: "slot" = one absolute 1-based number, three digits ("mv:st 005");
# "rack_site" = rack and site, two digits each, both from 0 ("mv:st 00 04", PLR
# _site_to_firmware_string, used on a Cytomat 2C in production).
MODELS: dict[str, str] = {
    "C6000": "slot",
    "C6002": "slot",
    "C2C_425": "rack_site",
    "C2C_450_SHAKE": "slot",
    "C5C": "slot",
}
# Shaker units by model (PLR sends se:pb 20/21, ll:va/vd to every model but the C5C).
_SHAKERS = {"C2C_450_SHAKE": 2}
ADDRESSING = ("slot", "rack_site")

_HEX2 = re.compile(r"[0-9A-F]{2}")


@dataclass(frozen=True)
class CytomatConfig:
    """The simulated model: geometry, timing (seconds), reply format and assumed codes.

    ``model`` (one of :data:`MODELS`, or None for a generic Cytomat) sets the defaults of
    ``addressing`` (how ``mv:`` commands name a location) and ``shakers`` (shaker units:
    ``ll:vi/va/vd``, ``se:pb``, ``ch:pb``; 0 answers them ``er 02``). ``racks`` lists the
    sites per rack (default: one rack of ``slots``); it must add up to ``slots``.
    """

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
    model: str | None = None
    addressing: str | None = None
    racks: tuple[int, ...] = ()
    shakers: int | None = None

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
        if self.model is not None and self.model not in MODELS:
            raise ValueError(f"model must be one of {', '.join(MODELS)}, got {self.model!r}")
        if self.addressing is not None and self.addressing not in ADDRESSING:
            raise ValueError(f"addressing must be slot or rack_site, got {self.addressing!r}")
        racks = self.rack_sizes
        if any(n < 1 or n > 99 for n in racks) or len(racks) > 99 or sum(racks) != self.slots:
            raise ValueError(f"racks {list(racks)} must be 1..99 sites each, {self.slots} in all")

    @property
    def location_format(self) -> str:
        """``slot`` or ``rack_site``: the given addressing, else the model's."""
        return self.addressing or MODELS.get(self.model or "", "slot")

    @property
    def rack_sizes(self) -> tuple[int, ...]:
        """Sites per rack (one rack of ``slots`` unless ``racks`` is given)."""
        return self.racks or (self.slots,)

    @property
    def shaker_units(self) -> int:
        """Shaker units: the given number, else the model's (0 if it has none)."""
        return self.shakers if self.shakers is not None else _SHAKERS.get(self.model or "", 0)


def parse_location(params: list[str], config: CytomatConfig) -> int | str:
    """The absolute slot (1-based) a move's parameters name, or the error reply.

    ``er 03``: wrong number of parameters; ``er 04``: a parameter of the wrong shape;
    ``er 05``: no such location.
    """
    if config.location_format == "slot":
        if len(params) != 1:
            return "er 03"
        if not re.fullmatch(r"\d{3}", params[0]):
            return "er 04"
        slot = int(params[0])
        return slot if 1 <= slot <= config.slots else "er 05"
    if len(params) != 2:
        return "er 03"
    if not all(re.fullmatch(r"\d{2}", p) for p in params):
        return "er 04"
    rack, site = int(params[0]), int(params[1])
    sizes = config.rack_sizes
    if rack >= len(sizes) or site >= sizes[rack]:
        return "er 05"
    return sum(sizes[:rack]) + site + 1
