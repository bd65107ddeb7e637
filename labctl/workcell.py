"""The workcell file (DEVICES.md section 10): which devices a lab has and how to reach them.

Only the shape is checked here (the core never imports drivers); each driver checks its own
connection keys when the registry builds it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import time
from pathlib import Path
from typing import Any

from labctl.errors import Diagnostic, ProtocolError
from labctl.protocol import source
from labctl.protocol.source import Map, Scalar, Seq
from labctl.units import Dim, UnitParseError, parse_quantity

INCUBATOR_DRIVERS = {"cytomat", "liconic", "manual-incubator", "sim-cytomat", "sim-liconic"}
MOVER_DRIVERS = {"pf400"}  # plate movers: robot arms that carry plates between stations
_DAYS = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")
_HOURS_RE = re.compile(r"^\s*([01]?\d|2[0-3]):([0-5]\d)\s*-\s*([01]?\d|2[0-4]):([0-5]\d)\s*$")


@dataclass(frozen=True)
class Device:
    """One device entry: its name, driver and the driver's own settings (plain data)."""

    name: str
    driver: str
    settings: dict[str, Any]
    line: int

    def setpoints(self) -> dict[str, float]:
        """Incubator setpoints in degC / percent; defaults 37 degC and 5% CO2."""
        out = {"temperature": 37.0, "co2": 5.0}
        sp = self.settings.get("setpoints") or {}
        for k, v in sp.items():
            try:
                q = parse_quantity(str(v), Dim.TEMPERATURE if k == "temperature" else Dim.FRACTION)
            except UnitParseError:
                continue
            out[k] = float(q.to("degC" if k == "temperature" else "percent").magnitude)
        return out


@dataclass(frozen=True)
class OperatorCalendar:
    """When a person is at the workcell: weekday (0 = Monday) -> (start, end), wall-clock
    times in ``timezone`` (the workcell's, not a run's); an end not after its start runs
    past midnight. No hours at all: someone is always there."""

    hours: dict[int, tuple[time, time]] = field(default_factory=dict)
    timezone: str = "UTC"


@dataclass(frozen=True)
class Workcell:
    name: str
    timezone: str
    devices: dict[str, Device]
    operator_hours: dict[int, tuple[time, time]] = field(default_factory=dict)  # weekday 0=Mon
    source_file: str = ""

    def operator_calendar(self) -> OperatorCalendar:
        """The operators' hours, in the workcell's own time zone."""
        return OperatorCalendar(dict(self.operator_hours), self.timezone)

    def incubators(self) -> list[Device]:
        return [d for d in self.devices.values() if d.driver in INCUBATOR_DRIVERS]

    def incubator_capabilities(self) -> list[tuple[str, dict[str, float]]]:
        return [(d.name, d.setpoints()) for d in self.incubators()]

    def can_hold(self, quantity: str, value: float) -> bool:
        """Whether some incubator's setpoint for ``quantity`` is ``value`` (degC or %)."""
        for _, sp in self.incubator_capabilities():
            if quantity in sp and abs(sp[quantity] - value) < 1e-6:
                return True
        return False


def _plain(node: source.Node) -> Any:
    if isinstance(node, Map):
        return {k.text: _plain(v) for k, v in node.entries}
    if isinstance(node, Seq):
        return [_plain(i) for i in node.items]
    assert isinstance(node, Scalar)
    if node.is_null:
        return None
    if node.kind == "int" and not node.quoted:
        try:
            return int(node.text, 0)
        except ValueError:
            return node.text
    if node.kind == "bool" and not node.quoted:
        return node.text.lower() in ("true", "yes", "on", "y")
    return node.text


def load_workcell(path: str | Path) -> Workcell:
    """Read a workcell file; raises ProtocolError with located diagnostics, InputFileError."""
    text = source.read_text(path)
    return parse_workcell(text, str(path))


def parse_workcell(text: str, file: str) -> Workcell:
    root, diags = source.parse(text, file)
    errs = list(diags)

    def err(node: source.Node, msg: str) -> None:
        errs.append(Diagnostic(file, node.mark.line, node.mark.col, "error", msg))

    if root is None:
        raise ProtocolError(errs)
    if not isinstance(root, Map):
        err(root, "a workcell file must be a mapping with name, timezone and devices")
        raise ProtocolError(errs)
    for k, _ in root.entries:
        if k.text not in ("name", "timezone", "devices", "operators") and not k.text.startswith(
            "x-"
        ):
            err(
                k,
                f"unknown key '{k.text}' in the workcell (expected name, timezone, devices, operators)",
            )
    name_node, tz_node = root.get("name"), root.get("timezone")
    name = _plain(name_node) if name_node is not None else Path(file).stem
    tz = _plain(tz_node) if tz_node is not None else "UTC"
    devices: dict[str, Device] = {}
    dn = root.get("devices")
    if not isinstance(dn, Map) or not dn.entries:
        err(
            dn or root,
            "the workcell needs 'devices': a mapping of device names to {driver: ..., ...}",
        )
    else:
        for k, v in dn.entries:
            if not isinstance(v, Map):
                err(
                    v,
                    f"device '{k.text}' must be a mapping like {{driver: cytomat, port: /dev/ttyUSB0}}",
                )
                continue
            drv = v.get("driver")
            if not isinstance(drv, Scalar) or not drv.text:
                err(v, f"device '{k.text}' needs a 'driver'")
                continue
            settings = _plain(v)
            settings.pop("driver", None)
            devices[k.text] = Device(k.text, drv.text, settings, k.mark.line)
    hours: dict[int, tuple[time, time]] = {}
    on = root.get("operators")
    if isinstance(on, Map) and isinstance(on.get("hours"), Map):
        for k, v in on.get("hours").entries:  # type: ignore[union-attr]
            days = _weekdays(k.text)
            m = _HOURS_RE.match(v.text) if isinstance(v, Scalar) else None
            if days is None or m is None:
                err(k, f"operator hours '{k.text}: ...' must look like mon-fri: \"08:00-18:00\"")
                continue
            a = time(int(m.group(1)), int(m.group(2)))
            b = time(23, 59) if m.group(3) == "24" else time(int(m.group(3)), int(m.group(4)))
            for d in days:
                hours[d] = (a, b)
    if errs:
        raise ProtocolError(errs)
    return Workcell(str(name), str(tz), devices, hours, file)


def _weekdays(text: str) -> list[int] | None:
    out: list[int] = []
    for part in text.lower().replace(" ", "").split(","):
        if "-" in part:
            a, b = part.split("-", 1)
            if a not in _DAYS or b not in _DAYS:
                return None
            i, j = _DAYS.index(a), _DAYS.index(b)
            out.extend(range(i, j + 1) if i <= j else [*range(i, 7), *range(0, j + 1)])
        elif part in _DAYS:
            out.append(_DAYS.index(part))
        else:
            return None
    return out
