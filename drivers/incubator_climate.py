"""The climate of one serial incubator: its setpoints, readings and the "climate" alarm.

Not thread-safe by itself: :class:`~labctl.drivers.incubators.SerialIncubator` calls it under
its lock.
"""

from __future__ import annotations

from collections.abc import Mapping

from labctl.clock import Clock
from labctl.devices import Climate

from .incubator_link import IncubatorLink

__all__ = ["CLIMATE_TOLERANCE", "ClimateWatch"]

# Allowed deviation of an actual climate value from its setpoint before a "climate" alarm:
# degC for temperature, percentage points for CO2 and O2.
CLIMATE_TOLERANCE: dict[str, float] = {"temperature": 1.0, "co2": 1.0, "o2": 1.0}

_CLIMATE_LABELS = {"temperature": ("temperature", "degC"), "co2": ("CO2", "%"), "o2": ("O2", "%")}


class ClimateWatch:
    """Setpoints (keys ``temperature`` degC, ``co2`` and ``o2`` percent) and readings.

    ``check_s``: a reading is reused by :meth:`recent` for this long; ``settle_s``: no
    deviation is reported for this long after a setpoint change (seconds on ``clock``).
    """

    def __init__(
        self,
        name: str,
        link: IncubatorLink,
        clock: Clock,
        setpoints: Mapping[str, float] | None = None,
        *,
        check_s: float = 60.0,
        settle_s: float = 1800.0,
    ) -> None:
        self.name = name
        self.link = link
        self.clock = clock
        self.check_s = check_s
        self.settle_s = settle_s
        self.targets: dict[str, float] = {
            k: float(v) for k, v in (setpoints or {}).items() if k in CLIMATE_TOLERANCE
        }
        self._climate: tuple[float, Climate] | None = None  # (clock.monotonic(), reading)
        self._settle_until: float | None = None

    def read(self) -> Climate:
        """Read the actual climate now (degC, percent)."""
        climate = self.link.read_climate()
        self._climate = (self.clock.monotonic(), climate)
        return climate

    def recent(self) -> Climate:
        """The last reading if it is younger than ``check_s``, else a new one."""
        if self._climate is not None and self.clock.monotonic() - self._climate[0] < self.check_s:
            return self._climate[1]
        return self.read()

    def write(self, temperature_c: float, co2_pct: float, o2_pct: float | None) -> None:
        """Write temperature and CO2 setpoints; ``o2_pct`` (held at the device) only becomes
        the target the alarm compares against."""
        self.link.set_climate(temperature_c, co2_pct)
        self.targets["temperature"] = float(temperature_c)
        self.targets["co2"] = float(co2_pct)
        if o2_pct is not None:
            self.targets["o2"] = float(o2_pct)
        # The chamber takes a while to reach new setpoints: no climate alarm meanwhile.
        self._settle_until = self.clock.monotonic() + self.settle_s
        self._climate = None

    def deviation(self, climate: Climate) -> str:
        """The "climate out of range" message for ``climate``, or "" when all is in range
        (or the chamber is still settling)."""
        if self._settle_until is not None and self.clock.monotonic() < self._settle_until:
            return ""
        actual = {
            "temperature": climate.temperature_c,
            "co2": climate.co2_pct,
            "o2": climate.o2_pct,
        }
        off = []
        for key, target in self.targets.items():
            value = actual.get(key)
            if value is None:
                continue  # the device does not measure it
            if abs(value - target) > CLIMATE_TOLERANCE[key]:
                label, unit = _CLIMATE_LABELS[key]
                off.append(
                    f"{label} {value:g} {unit} (setpoint {target:g} {unit} +- {CLIMATE_TOLERANCE[key]:g})"
                )
        return f"{self.name}: climate out of range: " + ", ".join(off) if off else ""
