"""Quantities: one pint unit registry for all of labctl, and parsing of "100 nM"-style text.

Concentrations come in three kinds, which cannot be mixed without a molar mass:
molar (``[substance]/[length]**3``), mass (``[mass]/[length]**3``) and fractions (``%``).
"""

from __future__ import annotations

import math
import re
from enum import Enum
from functools import lru_cache
from typing import Any

import pint
from pint.facets.plain import PlainUnit

__all__ = [
    "Dim",
    "MolarMassNeeded",
    "Q_",
    "UnitConversionError",
    "UnitParseError",
    "convert",
    "format_quantity",
    "format_unit",
    "parse_quantity",
    "quantity_text",
    "ureg",
]


def _make_registry() -> pint.UnitRegistry:
    # The on-disk cache makes the registry ~10x faster to build (validate runs on every
    # save); fall back to an uncached registry where the cache folder is not writable.
    try:
        reg: pint.UnitRegistry = pint.UnitRegistry(cache_folder=":auto:")
    except Exception:  # noqa: BLE001 - any cache problem just means "no cache"
        reg = pint.UnitRegistry()
    reg.formatter.default_format = "~P"
    return reg


ureg: pint.UnitRegistry = _make_registry()
Q_ = ureg.Quantity
Quantity = pint.Quantity


class UnitParseError(ValueError):
    """A quantity's text could not be read, or has the wrong dimension."""


class UnitConversionError(ValueError):
    """A quantity cannot be given in the unit asked for (another kind of quantity)."""


class MolarMassNeeded(UnitConversionError):
    """A molar and a mass concentration meet, and no molar mass was given to convert."""


class Dim(Enum):
    """The dimensions a protocol value may have, with the words used in messages."""

    CONCENTRATION = "a concentration (e.g. 100 nM, 10 ng/mL, 1%)"
    MOLAR = "a molar concentration"
    VOLUME = "a volume (e.g. 2 mL, 500 uL)"
    DURATION = "a duration (e.g. 30 min, 2 h, 1 d)"
    FRACTION = "a percentage (e.g. 25%)"
    TEMPERATURE = "a temperature (e.g. 37 degC)"
    MOLAR_MASS = "a molar mass (e.g. 465.3 g/mol)"
    ANY = "a quantity"


_NUMBER = r"[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?"
_QTY_RE = re.compile(rf"^\s*({_NUMBER})\s*([^\s\d.+-][^\n]*?)?\s*$")
# Unit spellings scientists use that pint does not know, or reads differently.
_ALIASES = {
    "%": "percent",
    "µ": "u",
    "μ": "u",  # Greek mu (U+03BC) as well as the micro sign (U+00B5)
    "°C": "degC",
    "ºC": "degC",
}
_MAX_UNIT_TEXT = 40


def _dimension_of(q: pint.Quantity) -> str:
    return str(q.dimensionality)


_MOLAR_DIMS = "[substance] / [length] ** 3"
_MASS_DIMS = "[mass] / [length] ** 3"


def concentration_kind(q: pint.Quantity) -> str | None:
    """'molar', 'mass' or 'fraction' for a concentration, None for anything else."""
    d = _dimension_of(q)
    if d == _MOLAR_DIMS:
        return "molar"
    if d == _MASS_DIMS:
        return "mass"
    if q.dimensionless:
        return "fraction"
    return None


def _matches(q: pint.Quantity, dim: Dim) -> bool:
    d = _dimension_of(q)
    if dim is Dim.ANY:
        return True
    if dim is Dim.CONCENTRATION:
        return concentration_kind(q) is not None
    if dim is Dim.MOLAR:
        return d == _MOLAR_DIMS
    if dim is Dim.VOLUME:
        return d == "[length] ** 3"
    if dim is Dim.DURATION:
        return d == "[time]"
    if dim is Dim.FRACTION:
        return q.dimensionless
    if dim is Dim.TEMPERATURE:
        return d == "[temperature]"
    if dim is Dim.MOLAR_MASS:
        return d == "[mass] / [substance]"
    return False


@lru_cache(maxsize=512)
def _parse_unit(unit_text: str) -> pint.Unit:
    return ureg.parse_units(unit_text)


def parse_quantity(text: Any, dim: Dim = Dim.ANY) -> pint.Quantity:
    """Read ``"3 uM"`` (or ``3 µM``, ``25%``, ``37 degC``) as a pint Quantity of dimension ``dim``.

    Raises UnitParseError with a message fit for the user. A bare number is refused: every
    quantity in a protocol carries its unit, so that a dose is never guessed.
    """
    if isinstance(text, bool) or not isinstance(text, (str, int, float)):
        raise UnitParseError(f"expected {dim.value}, got {type(text).__name__}")
    s = str(text)
    m = _QTY_RE.match(s)
    if not m:
        raise UnitParseError(
            f"'{_clip(s)}' is not a number followed by a unit; expected {dim.value}"
        )
    number, unit = m.group(1), (m.group(2) or "").strip()
    if not unit:
        raise UnitParseError(f"'{_clip(s)}' has no unit; expected {dim.value}")
    if len(unit) > _MAX_UNIT_TEXT:
        raise UnitParseError(
            f"unit '{_clip(unit)}' is too long (labctl reads units of at most {_MAX_UNIT_TEXT} characters)"
        )
    hint = _misread(unit)
    if hint:
        raise UnitParseError(f"'{_clip(s)}': {hint}")
    for a, b in _ALIASES.items():
        unit = unit.replace(a, b)
    value = float(number)
    if not math.isfinite(value):
        raise UnitParseError(f"'{_clip(s)}' is not a finite number")
    try:
        u = _parse_unit(unit)
    except Exception as exc:  # noqa: BLE001 - pint raises many types for bad unit text
        raise UnitParseError(f"unknown unit '{_clip(unit)}' in '{_clip(s)}'") from exc
    q = Q_(value, u)
    if not _matches(q, dim):
        also = ""
        if unit in ("C", "F"):
            also = f" ({unit} alone is the {'coulomb' if unit == 'C' else 'farad'}; degrees are written degC)"
        raise UnitParseError(f"'{_clip(s)}' is {_describe(q)}; expected {dim.value}{also}")
    return q


# Units of activity (U/mL, IU/mL, mU/mL; "u" alone, which pint reads as the atomic mass
# unit) and supplement strengths (1x of a 50x stock): common in culture protocols, but not
# quantities labctl can convert. Refused with what to write instead, never misread.
_ACTIVITY = re.compile(r"(?<![A-Za-z])(?:[kmµμun]?I?U|u)(?![A-Za-z])")


def _misread(unit: str) -> str | None:
    if unit.strip() in ("x", "X", "×"):
        return (
            "a supplement's strength (1x of a 50x stock) is not a unit labctl reads; write it "
            "as a fraction of the stock: a 50x stock used at 1x is stock: 100%, conc: 2%"
        )
    if _ACTIVITY.search(unit):
        return (
            f"'{unit}' is read as units of activity (U, IU) or, for 'u' alone, as the atomic "
            "mass unit; labctl converts neither: write the dose as a fraction of the stock "
            "(stock: 100%, conc: 1% for 1:100), or give molar or mass units"
        )
    return None


def _describe(q: pint.Quantity) -> str:
    for dim in (Dim.VOLUME, Dim.DURATION, Dim.TEMPERATURE, Dim.MOLAR_MASS, Dim.FRACTION):
        if _matches(q, dim):
            return dim.value.split(" (")[0]
    kind = concentration_kind(q)
    if kind:
        return f"a {kind} concentration"
    return f"of dimension {q.dimensionality}"


def _clip(s: str, n: int = 60) -> str:
    s = s.replace("\n", " ")
    return s if len(s) <= n else s[: n - 3] + "..."


def format_quantity(q: pint.Quantity, digits: int = 4) -> str:
    """Human text for a quantity with at most ``digits`` significant digits: ``2.5 µL``."""
    mag = float(q.magnitude)
    # pint abbreviates litre as "l"; labs write "mL" and "µL".
    unit = re.sub(r"(^|[^a-zA-Z])([µnmcpd]?)l\b", r"\1\2L", f"{q.units:~P}")
    if unit == "%":
        return f"{_fmt_num(mag, digits)}%"
    return f"{_fmt_num(mag, digits)} {unit}"


def _fmt_num(x: float, digits: int) -> str:
    if x == 0:
        return "0"
    s = f"{x:.{digits}g}"
    if "e" in s:
        # Protocol users read plain decimals better than exponents for lab-scale values.
        s = f"{x:.{max(0, digits - 1 - int(math.floor(math.log10(abs(x)))))}f}".rstrip("0").rstrip(
            "."
        )
    return s


# --- conversions --------------------------------------------------------------------------


@lru_cache(maxsize=256)
def _chemistry_factor(src: str, dst: str, mw_g_per_mol: float) -> float:
    # pint's "chemistry" context converts [substance]/[volume] <-> [mass]/[volume] through
    # the molar mass; the factor is computed once per (units, mw) because a context switch
    # costs about a millisecond and concentrations are converted in inner loops.
    one = Q_(1.0, src).to(dst, "chemistry", mw=Q_(mw_g_per_mol, "g/mol"))
    return float(one.magnitude)


def convert(q: pint.Quantity, unit: object, mw: pint.Quantity | None = None) -> pint.Quantity:
    """``q`` in ``unit``; a molar concentration to a mass one (or back) through ``mw``.

    Raises MolarMassNeeded when the two kinds meet and ``mw`` is None, and
    UnitConversionError for any other pair that cannot convert (a volume to a
    concentration, a percentage to a molar concentration).
    """
    target = Q_(1.0, unit if isinstance(unit, (str, PlainUnit)) else str(unit))
    if q.dimensionality == target.dimensionality:
        return q.to(target.units)
    kinds = {concentration_kind(q), concentration_kind(target)}
    if kinds == {"molar", "mass"}:
        if mw is None:
            raise MolarMassNeeded(
                f"{format_quantity(q)} is a {concentration_kind(q)} concentration and "
                f"{format_unit(target.units)} a {concentration_kind(target)} one; converting "
                "needs the compound's molar mass (mw, e.g. mw: 465.3 g/mol)"
            )
        mw_g = float(mw.to("g/mol").magnitude)
        src = "mol/L" if concentration_kind(q) == "molar" else "g/L"
        base = float(q.to(src).magnitude)
        factor = _chemistry_factor(src, str(target.units), mw_g)
        return Q_(base * factor, target.units)
    raise UnitConversionError(
        f"{format_quantity(q)} is {_describe(q)} and cannot be given in {format_unit(target.units)}"
    )


# --- the format's own spelling ----------------------------------------------------------------

# pint's short symbols that the protocol format writes otherwise ("l" -> "L", "µ" -> "u",
# "°C" -> "degC"): text written with these reads back through parse_quantity unchanged.
_PINT_TO_FORMAT = [("µ", "u"), ("°C", "degC"), ("Δ°C", "delta_degC")]


def format_unit(u: object) -> str:
    """A unit as the protocol format writes it: ``uM``, ``ng/mL``, ``mL``, ``h``, ``%``.

    One spelling for machine output: no spaces, litre as ``L``, micro as ``u`` (pint's own
    ``ng / ml`` and ``µM`` are display forms of the same units).
    """
    unit = u if isinstance(u, PlainUnit) else _parse_unit(str(u))
    text = f"{unit:~C}"  # compact: "ng/ml", "µM", "mol/l", "percent" -> "%"
    text = re.sub(r"(^|[^a-zA-Z])([µunmcpdf]?)l\b", r"\1\2L", text)
    for a, b in _PINT_TO_FORMAT:
        text = text.replace(a, b)
    return text


def round_sig(x: float, digits: int = 12) -> float:
    """``x`` rounded to ``digits`` significant digits: ``10.000000000000002`` -> ``10.0``.

    Float noise from unit arithmetic sits in the 16th-17th digit; 12 digits keep every
    value a person or a pipette can mean, and never move a value by more than 5e-13 of it.
    """
    if x == 0 or not math.isfinite(x):
        return x
    return float(f"{x:.{digits}g}")


def quantity_text(q: pint.Quantity, digits: int = 12) -> str:
    """A quantity as the format writes it, value to ``digits`` significant digits:
    ``20 ng/mL``, ``3 uM``, ``25%``. Parses back (parse_quantity) to the same value."""
    unit = format_unit(q.units)
    num = f"{round_sig(float(q.magnitude), digits):.{digits}g}"
    if "e" in num:
        num = str(round_sig(float(q.magnitude), digits))
    return f"{num}%" if unit == "%" else f"{num} {unit}"
