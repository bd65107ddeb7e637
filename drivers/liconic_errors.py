"""What a LiCONiC StoreX's PLC error replies and DM200 handling-error codes mean.

PLC replies ``E0``..``E5`` (LiCONiC "StoreX Series Remote Operation V0712" 1.2.7).

DM200 (five decimal digits) comes in two encodings on real units; :func:`decode` reads both:

- V0712 1.4, the table PyLabRobot 0.2.2 transcribes (``storage/liconic/constants.py``):
  ``000cc`` a general cause (01, 07..17); ``001ss`` / ``002ss`` the step of an import /
  export that failed (00..11; these are *not* causes: 00110 is "lift could not reach zero
  level during Import Plate", not "user access"); ``0ppcc`` phase pp = 3 plate remove (pick),
  4 barcode read, 5 place, 6 set, 7 get, with a general cause.
- Newer firmware: the cause is the low byte of the value read as hex (open-liconic-stx 0.1.0
  ``stx/errors.py``, written against STX units at UMG Goettingen); e.g. ``06163`` = 0x1813,
  cause 0x13 "shovel OUT time out", reported by a real STX for a load into an occupied slot.
  Used for any code the V0712 table does not hold.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "GATE_OR_ACCESS_CAUSES",
    "HANDLING_CAUSES",
    "PLC_ERRORS",
    "HandlingError",
    "decode",
    "describe_handling_error",
    "handling_cause",
]

PLC_ERRORS: dict[str, str] = {
    "E0": "relay error: undefined relay, timer, counter or data memory address",
    "E1": "command error (session not opened by CR, bad syntax or interrupted transmission)",
    "E2": "PLC program error (firmware lost)",
    "E3": "PLC hardware error (switch the controller off and on)",
    "E4": "write protected (unauthorised access)",
    "E5": "PLC base unit error (unauthorised access)",
}

# V0712 general causes: DM200 = cause, or phase * 100 + cause.
HANDLING_CAUSES: dict[int, str] = {
    1: "general handling error: the handling action could not be performed in time",
    7: "gate open error: the gate did not reach its upper position in time",
    8: "gate close error: the gate did not reach its lower position in time",
    9: "lift positioning error: the handler lift could not reach the level or does not move",
    10: "user access error: unauthorised user access with manual rotation of the carrousel",
    11: "stacker slot error: the stacker slot cannot be reached",
    12: "remote access level error: an undefined stacker level was requested",
    13: "plate transfer detection error: export while a plate is on the transfer station",
    14: "lift initialisation error: the lift could not be initialised",
    15: "plate on shovel: a plate is already on the shovel",
    16: "no plate on shovel: no plate on the shovel to remove or place",
    17: "no recovery possible",
}

_PHASES: dict[int, str] = {3: "plate remove", 4: "barcode read", 5: "place", 6: "set", 7: "get"}

# V0712 steps of an import (DM200 = 100 + step) and of an export (200 + step).
_IMPORT_STEPS: dict[int, str] = {
    0: "carrousel or lift could not reach the transfer position",
    1: "handler could not turn out at the transfer level",
    2: "shovel could not reach its outer position at the transfer level",
    3: "lift did not reach the upper pick position at the transfer level",
    4: "shovel could not reach its inner position at the transfer level",
    5: "handler could not turn in at the transfer level",
    6: "lift could not reach the stacker level",
    7: "shovel could not reach the stacker's front position",
    8: "lift could not reach the stacker place level",
    9: "shovel could not reach its inner position after placing in the stacker",
    10: "lift could not reach zero level",
    11: "lift could not be initialised after the import",
}
_EXPORT_STEPS: dict[int, str] = {
    0: "carrousel or lift could not reach the stacker position",
    1: "shovel could not reach the stacker's front position",
    2: "lift could not reach the stacker pick level",
    3: "shovel could not reach its inner position after picking in the stacker",
    4: "lift could not reach the transfer level",
    5: "handler could not turn out at the transfer level",
    6: "shovel could not reach its outer position at the transfer level",
    7: "lift did not reach the lower place position at the transfer level",
    8: "shovel could not reach its inner position at the transfer level",
    9: "handler could not turn in at the transfer level",
    10: "lift could not reach zero position",
    11: "lift could not be initialised after the export",
}

# Newer firmware: cause = low byte of DM200 (open-liconic-stx 0.1.0 stx/errors.py).
_FIRMWARE_CAUSES: dict[int, str] = {
    0x01: "general time out: the operation took longer than 15 minutes",
    0x02: "general time out after a previous time out",
    0x03: "initialisation took too long",
    0x04: "carrousel miss count: wrong number of cassette positions during initialisation",
    0x07: "gate open time out",
    0x08: "gate close time out",
    0x09: "lift travel exceeds its maximum",
    0x0A: "wrong cassette: DM0 exceeds the number of cassettes (DM29)",
    0x0B: "lift overflow: the travel path exceeds the maximum allowed",
    0x0C: "wrong level: DM5 exceeds the number of levels (DM25)",
    0x0D: "plate trace error: the plate was not loaded or unloaded to or from the shovel",
    0x0E: "the system could not initialise (init time out)",
    0x10: "turn not at its init sensor or safe position (possible step loss)",
    0x12: "carrousel initialisation time out",
    0x13: "shovel OUT time out: the shovel could not be extended",
    0x14: "shovel IN time out: the shovel could not be retracted",
}
# Newer-firmware causes that mean the same as a V0712 cause.
_FIRMWARE_AS_CAUSE = {0x07: 7, 0x08: 8}

# Causes that mean the gate or a person at the device (gate open, user access).
GATE_OR_ACCESS_CAUSES = frozenset({7, 10})


@dataclass(frozen=True)
class HandlingError:
    """One DM200 code read: ``meaning`` in words, ``cause`` the V0712 general cause it
    carries (None for import/export steps and unknown codes)."""

    code: int
    meaning: str
    cause: int | None


def decode(code: int) -> HandlingError:
    """Read a DM200 value (either encoding); unknown codes say so."""
    if code in HANDLING_CAUSES:
        return HandlingError(code, HANDLING_CAUSES[code], code)
    phase, rest = divmod(code, 100)
    if phase == 1 and rest in _IMPORT_STEPS:
        return HandlingError(code, f"import failed: {_IMPORT_STEPS[rest]}", None)
    if phase == 2 and rest in _EXPORT_STEPS:
        return HandlingError(code, f"export failed: {_EXPORT_STEPS[rest]}", None)
    if phase in _PHASES and rest in HANDLING_CAUSES:
        return HandlingError(code, f"{_PHASES[phase]}: {HANDLING_CAUSES[rest]}", rest)
    low = code & 0xFF
    if code > 0 and low in _FIRMWARE_CAUSES:
        meaning = f"cause 0x{low:02X}: {_FIRMWARE_CAUSES[low]}"
        return HandlingError(code, meaning, _FIRMWARE_AS_CAUSE.get(low))
    return HandlingError(code, "unknown handling error", None)


def describe_handling_error(code: int) -> str:
    """Meaning of a DM200 code, e.g. ``16 -> 'no plate on shovel: ...'``."""
    return decode(code).meaning


def handling_cause(code: int) -> int | None:
    """The V0712 general cause a DM200 code carries (None if none)."""
    return decode(code).cause
