"""Devices by driver name: from a workcell file (DEVICES.md section 10) to engine devices.

:func:`build_devices` turns each workcell entry into one device object by its ``driver``:

===================  ==================================================================
driver               settings (besides ``driver``)
===================  ==================================================================
``opentrons``        ``url`` (http://host:31950), ``robot`` (OT-2 or Flex), ``deck``;
                     optional ``api_version``, ``timeout_s``, ``tip_capacity``, ``check``,
                     ``batch`` (plates fed in one run, up to its plate positions)
``cytomat``          ``port`` or ``url`` (a pyserial URL), ``slots``; optional
                     ``terminator`` (CR or CRLF), ``baudrate``, ``initialize``,
                     ``move_timeout_s``, ``reply_timeout_s``, ``setpoints``, ``model``
                     (PyLabRobot's name: C6000, C6002, C2C_425, C2C_450_SHAKE, C5C) with
                     ``racks`` (sites per rack; required by C2C_425, which is sent rack
                     and site)
``liconic``          ``port`` or ``url``, ``levels`` (per cassette: a number with
                     ``cassettes``, or a list), optional ``slots`` (checked against
                     them), ``n2_register_is_o2``, ``baudrate``, ``initialize``,
                     ``move_timeout_s``, ``reply_timeout_s``, ``setpoints``
``manual-incubator`` optional ``setpoints`` (prompts through the run database)
``operator``         nothing (prompts through the run database)
``pf400``            ``host``, ``stations`` (name -> station taught on the arm); optional
                     ``port`` (10100), ``status_port`` (10000; none), ``grasp``
                     ({width: 85.5 mm, speed: 50 %, force: 10 N}), ``motion_timeout_s``
===================  ==================================================================

Nothing is opened while building (ports and robots are reached on first use), so a bad
workcell fails fast with every problem listed: a :class:`ProtocolError` whose diagnostics
point at the device's line, e.g. ``wc.yaml:4:3: error: inc-1: 'port' is required ...``.

:func:`check_devices` reaches each device once and reports its state without raising;
:func:`devices_check_cli` prints that as a table (``labctl devices check --workcell W``).
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from labctl.clock import Clock, RealClock
from labctl.devices import Device
from labctl.errors import DeviceError, Diagnostic, LabctlError, ProtocolError
from labctl.operator import StoreOperator
from labctl.store import Store
from labctl.units import Dim, UnitParseError, parse_quantity
from labctl.workcell import Device as WorkcellDevice
from labctl.workcell import Workcell, load_workcell

from .cytomat import CytomatDriver
from .incubators import SerialIncubator
from .liconic import LiconicDriver
from .manual import ManualIncubator
from .opentrons_http import OpentronsClient, RobotModel

__all__ = [
    "KNOWN_DRIVERS",
    "DeviceCheck",
    "SimulatedWorkcell",
    "build_devices",
    "check_devices",
    "devices_check_cli",
    "format_checks",
    "store_job_context",
]

KNOWN_DRIVERS = ("cytomat", "liconic", "manual-incubator", "opentrons", "operator", "pf400")
SIM_DRIVERS = ("sim-cytomat", "sim-liconic", "sim-operator")
_PORT_EXAMPLE = "e.g. /dev/ttyUSB0 or socket://127.0.0.1:5001"


class SimulatedWorkcell(Protocol):
    """What the registry needs of the simulated workcell (built elsewhere): its devices,
    already pointed at running simulators, by name."""

    @property
    def devices(self) -> Mapping[str, Device]: ...


@dataclass(frozen=True)
class DeviceCheck:
    """One device's answer to ``labctl devices check``: ``ok`` when it is reachable and
    usable now; ``state`` is a few words, ``detail`` the readings or the error."""

    name: str
    driver: str
    ok: bool
    state: str
    detail: str


class _SettingError(Exception):
    """A device's settings are missing or wrong (message without the device name)."""


# --- building ------------------------------------------------------------------------


def build_devices(
    workcell: Workcell | None,
    store: Store,
    clock: Clock,
    *,
    sim: SimulatedWorkcell | None = None,
) -> dict[str, Device]:
    """One device per workcell entry, by its driver name; nothing is connected yet.

    An ``operator`` (prompts through ``store``) is added when the workcell has no device
    with driver ``operator``, as the engine always needs someone to ask. Entries with a
    ``sim-*`` driver are taken from ``sim``. Without a workcell, the devices of ``sim``
    are returned; without either, a LabctlError says what to do.

    Raises ProtocolError listing every device whose driver is unknown or whose settings
    are missing or wrong.
    """
    if workcell is None:
        if sim is None:
            raise LabctlError(
                "no workcell given: pass --workcell FILE (a workcell YAML, DEVICES.md "
                "section 10) to drive real devices, or use `labctl simulate` to run on the "
                "simulated workcell"
            )
        simulated = dict(sim.devices)
        _add_operator(simulated, store, has_operator="operator" in simulated)
        return simulated
    devices: dict[str, Device] = {}
    diags: list[Diagnostic] = []
    for dev in workcell.devices.values():
        try:
            devices[dev.name] = _build_one(dev, store, clock, sim)
        except _SettingError as exc:
            diags.append(_diagnostic(workcell, dev, str(exc)))
    if diags:
        raise ProtocolError(diags)
    has_operator = any(d.driver == "operator" for d in workcell.devices.values())
    _add_operator(devices, store, has_operator=has_operator)
    return devices


def _add_operator(devices: dict[str, Device], store: Store, *, has_operator: bool) -> None:
    if not has_operator and "operator" not in devices:
        devices["operator"] = StoreOperator(store, "operator")


def _diagnostic(workcell: Workcell, dev: WorkcellDevice, message: str) -> Diagnostic:
    return Diagnostic(
        workcell.source_file or "workcell", dev.line, 1, "error", f"{dev.name}: {message}"
    )


def _build_one(
    dev: WorkcellDevice, store: Store, clock: Clock, sim: SimulatedWorkcell | None
) -> Device:
    if dev.driver in SIM_DRIVERS:
        if sim is None or dev.name not in sim.devices:
            raise _SettingError(
                f"driver '{dev.driver}' is a simulated device: run it with `labctl simulate`"
            )
        return sim.devices[dev.name]
    builder = _BUILDERS.get(dev.driver)
    if builder is None:
        raise _SettingError(
            f"unknown driver '{dev.driver}' (known drivers: {', '.join(KNOWN_DRIVERS)})"
        )
    return builder(dev, store, clock)


def _build_opentrons(dev: WorkcellDevice, store: Store, clock: Clock) -> Device:
    client = _opentrons_client(dev, clock)
    robot = _robot(dev)
    deck = dev.settings.get("deck")
    if not isinstance(deck, dict) or not deck:
        raise _SettingError(
            "'deck' is required: where things sit on the deck, e.g. "
            "{plate: 1, reservoir: 2, tips: [10, 11], stocks: 4}"
        )
    try:
        # Imported here: these modules are optional for workcells without a liquid handler.
        from .opentrons_lh import OpentronsLiquidHandler
        from .opentrons_protocol import DeckLayout
    except ImportError as exc:
        raise _SettingError(
            f"the opentrons liquid-handler driver is not available ({exc})"
        ) from exc
    try:
        layout = DeckLayout.from_deck(deck, robot)
    except (LabctlError, ValueError, TypeError, KeyError) as exc:
        raise _SettingError(f"'deck': {exc}") from exc
    if "batch" in dev.settings:  # read by the planner (labctl.roles); checked here
        _int(dev, "batch", lo=1, hi=len(layout.plates))
    kwargs: dict[str, Any] = {}
    if "check" in dev.settings:
        kwargs["check"] = _bool(dev, "check", True)
    if "tip_capacity" in dev.settings:
        kwargs["tip_capacity"] = _int(dev, "tip_capacity", lo=1)
    try:
        lh: Device = OpentronsLiquidHandler(dev.name, client, layout, robot, **kwargs)
    except (ValueError, TypeError) as exc:
        raise _SettingError(str(exc)) from exc
    return lh


def _opentrons_client(dev: WorkcellDevice, clock: Clock) -> OpentronsClient:
    url = _str(dev, "url", example="e.g. http://10.0.0.12:31950")
    kwargs: dict[str, Any] = {}
    if "api_version" in dev.settings:
        kwargs["api_version"] = _int(dev, "api_version", lo=2)
    if "timeout_s" in dev.settings:
        kwargs["timeout_s"] = _seconds(dev, "timeout_s")
    try:
        return OpentronsClient(dev.name, url, clock, **kwargs)
    except ValueError as exc:
        # The client's message starts with the device name already.
        raise _SettingError(str(exc).removeprefix(f"{dev.name}: ")) from exc


def _robot(dev: WorkcellDevice) -> RobotModel:
    raw = dev.settings.get("robot")
    if raw is None:
        raise _SettingError("'robot' is required (OT-2 or Flex)")
    key = str(raw).strip().lower().replace("_", "-")
    if key in ("ot-2", "ot2"):
        return "OT-2"
    if key in ("flex", "ot-3", "ot3"):
        return "Flex"
    raise _SettingError(f"'robot' must be OT-2 or Flex, not {raw!r}")


def _build_cytomat(dev: WorkcellDevice, store: Store, clock: Clock) -> Device:
    return _cytomat_adapter(dev, clock)


def _cytomat_adapter(dev: WorkcellDevice, clock: Clock) -> SerialIncubator:
    url = _port(dev)
    slots = _int(dev, "slots", lo=1, hi=999)
    terminator = str(dev.settings.get("terminator", "CR")).strip().upper()
    if terminator not in ("CR", "CRLF"):
        raise _SettingError(f"'terminator' must be CR or CRLF, not {terminator!r}")
    kwargs: dict[str, Any] = {"terminator": "\r" if terminator == "CR" else "\r\n"}
    kwargs.update(_serial_options(dev))
    # PyLabRobot's model name and the sites per rack: the driver checks them.
    kwargs.update({k: dev.settings[k] for k in ("model", "racks") if k in dev.settings})
    try:
        driver = CytomatDriver(dev.name, url, clock, slots, **kwargs)
    except DeviceError as exc:
        raise _SettingError(exc.detail) from exc
    return _adapter(dev, driver, clock)


def _build_liconic(dev: WorkcellDevice, store: Store, clock: Clock) -> Device:
    return _liconic_adapter(dev, clock)


def _liconic_adapter(dev: WorkcellDevice, clock: Clock) -> SerialIncubator:
    url = _port(dev)
    levels = _levels(dev)
    kwargs = _serial_options(dev)
    if "n2_register_is_o2" in dev.settings:
        kwargs["n2_register_is_o2"] = _bool(dev, "n2_register_is_o2", False)
    driver = LiconicDriver(dev.name, url, clock, levels, **kwargs)
    return _adapter(dev, driver, clock)


def _adapter(
    dev: WorkcellDevice, driver: CytomatDriver | LiconicDriver, clock: Clock
) -> SerialIncubator:
    return SerialIncubator(
        dev.name,
        driver,
        clock,
        setpoints=_setpoints(dev),
        initialize=_bool(dev, "initialize", True),
    )


def _build_manual_incubator(dev: WorkcellDevice, store: Store, clock: Clock) -> Device:
    _setpoints(dev)  # checked, so a typo is found now; the operator sets them by hand
    return ManualIncubator(
        dev.name, StoreOperator(store, dev.name), job_context=store_job_context(store, dev.name)
    )


def _build_operator(dev: WorkcellDevice, store: Store, clock: Clock) -> Device:
    return StoreOperator(store, dev.name)


def _build_pf400(dev: WorkcellDevice, store: Store, clock: Clock) -> Device:
    """A PreciseFlex PF400/PF3400: ``host``, ``port`` (10100), ``status_port`` (10000, or
    none), ``stations`` (name -> number taught on the arm), optional ``grasp``
    ({width: 85.5 mm, speed: 50 %, force: 10 N}) and ``motion_timeout_s``."""
    from .pf400 import PF400Arm
    from .pf400_tcs import Grasp

    host = _str(dev, "host", example="e.g. 10.0.0.20")
    port = _int(dev, "port", lo=1, hi=65535) if "port" in dev.settings else 10100
    status: int | None = 10000
    if "status_port" in dev.settings:
        raw = dev.settings["status_port"]
        status = None if raw in (None, False, "none") else _int(dev, "status_port", lo=1, hi=65535)
    stations = dev.settings.get("stations")
    if not isinstance(stations, dict) or not stations:
        raise _SettingError(
            "'stations' is required: the stations taught on the arm by name, e.g. "
            "{inc-1/transfer: 1, ot2-a/1: 3}"
        )
    bad = [k for k, v in stations.items() if type(v) is not int or not 1 <= v <= 999]
    if bad:
        raise _SettingError(f"'stations': {', '.join(map(str, bad))}: a station is a number 1..999")
    taken: dict[int, str] = {}
    for k, v in stations.items():
        if v in taken:
            raise _SettingError(f"'stations': {taken[v]} and {k} are both station {v}")
        taken[v] = str(k)
    kwargs: dict[str, Any] = {}
    grasp = dev.settings.get("grasp")
    if grasp is not None:
        kwargs["grasp"] = _grasp(grasp, Grasp)
    if "motion_timeout_s" in dev.settings:
        kwargs["motion_timeout_s"] = _seconds(dev, "motion_timeout_s")
    return PF400Arm(
        dev.name,
        host,
        port,
        {str(k): int(v) for k, v in stations.items()},
        clock,
        status_port=status,
        **kwargs,
    )


def _grasp(raw: object, grasp: Callable[..., Any]) -> Any:
    """``grasp: {width: 85.5 mm, speed: 50 %, force: 10 N}`` as the driver's Grasp."""
    if not isinstance(raw, dict):
        raise _SettingError("'grasp' must be a mapping like {width: 85.5 mm, force: 10 N}")
    units = {"width": ("width_mm", "mm"), "speed": ("speed_pct", "%"), "force": ("force_n", "N")}
    out: dict[str, float] = {}
    for key, value in raw.items():
        if key not in units:
            raise _SettingError(f"'grasp': unknown key {key!r} (width, speed, force)")
        field, unit = units[key]
        text = str(value).strip()
        if text.endswith(unit):
            text = text[: -len(unit)].strip()
        try:
            out[field] = float(text)
        except ValueError:
            raise _SettingError(
                f"'grasp': {key} must be a number of {unit}, not {value!r}"
            ) from None
    limits = {"width_mm": ("width", 0.0, 300.0), "speed_pct": ("speed", 0.0, 100.0)}
    limits["force_n"] = ("force", 0.0, 100.0)
    for field, value in out.items():
        key, lo, hi = limits[field]
        if not lo < value <= hi:  # NaN fails too
            unit = units[key][1]
            raise _SettingError(f"'grasp': {key} must be above {lo:g} and at most {hi:g} {unit}")
    return grasp(**out)


_BUILDERS: dict[str, Callable[[WorkcellDevice, Store, Clock], Device]] = {
    "opentrons": _build_opentrons,
    "cytomat": _build_cytomat,
    "liconic": _build_liconic,
    "manual-incubator": _build_manual_incubator,
    "operator": _build_operator,
    "pf400": _build_pf400,
}


def store_job_context(store: Store, device: str) -> Callable[[str], dict[str, Any]]:
    """For prompts a device asks on a job's behalf: job key -> ``{run_id, job_id}``.

    Looks for the running job with that key on ``device`` (the engine commits RUNNING
    before it starts the device); the newest wins if two runs share a key. Raises
    DeviceError when there is none.
    """

    def context(job_key: str) -> dict[str, Any]:
        best: tuple[int, int] | None = None
        for run in store.list_runs():
            for job in store.jobs(run.id, state="running"):
                spec = job.spec if isinstance(job.spec, dict) else {}
                if job.device == device and spec.get("key") == job_key:
                    if best is None or job.id > best[1]:
                        best = (run.id, job.id)
        if best is None:
            raise DeviceError(
                device, f"prompt for {job_key}", "no running job with this key in the run database"
            )
        return {"run_id": best[0], "job_id": best[1]}

    return context


# --- settings ------------------------------------------------------------------------


def _str(dev: WorkcellDevice, key: str, *, example: str) -> str:
    raw = dev.settings.get(key)
    if raw is None or (isinstance(raw, str) and not raw.strip()):
        raise _SettingError(f"'{key}' is required ({example})")
    if not isinstance(raw, str):
        raise _SettingError(f"'{key}' must be text ({example}), not {raw!r}")
    return raw.strip()


def _port(dev: WorkcellDevice) -> str:
    has_port, has_url = dev.settings.get("port") is not None, dev.settings.get("url") is not None
    if has_port and has_url:
        raise _SettingError("give 'port' or 'url', not both")
    return _str(dev, "url" if has_url else "port", example=_PORT_EXAMPLE)


def _int(dev: WorkcellDevice, key: str, *, lo: int | None = None, hi: int | None = None) -> int:
    raw = dev.settings.get(key)
    if raw is None:
        raise _SettingError(f"'{key}' is required (a whole number)")
    if isinstance(raw, bool) or not isinstance(raw, int):
        raise _SettingError(f"'{key}' must be a whole number, not {raw!r}")
    if lo is not None and raw < lo:
        limit = f"in {lo}..{hi}" if hi is not None else f">= {lo}"
        raise _SettingError(f"'{key}' must be {limit}, not {raw}")
    if hi is not None and raw > hi:
        limit = f"in {lo}..{hi}" if lo is not None else f"<= {hi}"
        raise _SettingError(f"'{key}' must be {limit}, not {raw}")
    return raw


def _seconds(dev: WorkcellDevice, key: str) -> float:
    raw = dev.settings.get(key)
    try:
        value = float(raw)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        raise _SettingError(f"'{key}' must be a number of seconds, not {raw!r}") from None
    if isinstance(raw, bool) or not value > 0:
        raise _SettingError(f"'{key}' must be a positive number of seconds, not {raw!r}")
    return value


def _bool(dev: WorkcellDevice, key: str, default: bool) -> bool:
    raw = dev.settings.get(key, default)
    if not isinstance(raw, bool):
        raise _SettingError(f"'{key}' must be true or false, not {raw!r}")
    return raw


def _serial_options(dev: WorkcellDevice) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "baudrate" in dev.settings:
        out["baudrate"] = _int(dev, "baudrate", lo=300)
    for key in ("move_timeout_s", "reply_timeout_s"):
        if key in dev.settings:
            out[key] = _seconds(dev, key)
    return out


def _levels(dev: WorkcellDevice) -> list[int]:
    raw = dev.settings.get("levels")
    example = "levels per cassette: e.g. levels: 22 with cassettes: 2, or levels: [22, 22]"
    if raw is None:
        raise _SettingError(f"'levels' is required ({example})")
    if isinstance(raw, list):
        if not raw or any(isinstance(n, bool) or not isinstance(n, int) or n < 1 for n in raw):
            raise _SettingError(f"'levels' must list whole numbers >= 1 ({example}), not {raw!r}")
        if "cassettes" in dev.settings and _int(dev, "cassettes", lo=1) != len(raw):
            raise _SettingError(
                f"'cassettes' is {dev.settings['cassettes']} but 'levels' lists {len(raw)}"
            )
        levels = list(raw)
    else:
        per = _int(dev, "levels", lo=1)
        count = _int(dev, "cassettes", lo=1) if "cassettes" in dev.settings else 1
        levels = [per] * count
    if "slots" in dev.settings and _int(dev, "slots", lo=1) != sum(levels):
        raise _SettingError(
            f"'slots' is {dev.settings['slots']} but cassettes and levels give {sum(levels)}"
        )
    return levels


def _setpoints(dev: WorkcellDevice) -> dict[str, float]:
    raw = dev.settings.get("setpoints")
    if raw is None:
        return dev.setpoints()
    if not isinstance(raw, dict):
        raise _SettingError("'setpoints' must be a mapping, e.g. {temperature: 37 degC, co2: 5%}")
    for key, value in raw.items():
        if key not in ("temperature", "co2", "o2"):
            raise _SettingError(
                f"'setpoints' has unknown key '{key}' (expected temperature, co2, o2)"
            )
        dim = Dim.TEMPERATURE if key == "temperature" else Dim.FRACTION
        try:
            parse_quantity(str(value), dim)
        except UnitParseError as exc:
            what = "a temperature like 37 degC" if key == "temperature" else "a percentage like 5%"
            raise _SettingError(f"setpoints.{key} must be {what}, not {value!r}") from exc
    return dev.setpoints()


# --- checking ------------------------------------------------------------------------


def check_devices(workcell: Workcell, store: Store | None, clock: Clock) -> list[DeviceCheck]:
    """Reach each device once and report its state; one device's failure never raises.

    Robots: ``GET /health`` (model, software, protocol API range), the pipettes per mount
    and the modules (failing when they do not fit the workcell's deck). Serial incubators:
    connect (no initialization), status and climate. Operators: prompts pending in
    ``store`` (None: no run database yet).
    """
    return [_check_one(dev, store, clock) for dev in workcell.devices.values()]


def _check_one(dev: WorkcellDevice, store: Store | None, clock: Clock) -> DeviceCheck:
    try:
        if dev.driver == "opentrons":
            return _check_opentrons(dev, clock)
        if dev.driver == "cytomat":
            return _check_incubator(dev, _cytomat_adapter(dev, clock))
        if dev.driver == "liconic":
            return _check_incubator(dev, _liconic_adapter(dev, clock))
        if dev.driver == "manual-incubator":
            _setpoints(dev)
            return DeviceCheck(dev.name, dev.driver, True, "manual", "the operator is prompted")
        if dev.driver == "operator":
            n = len(store.open_prompts()) if store is not None else 0
            return DeviceCheck(dev.name, dev.driver, True, f"{n} prompt(s) pending", "")
        if dev.driver == "pf400":
            return _check_arm(dev, clock)
        if dev.driver in SIM_DRIVERS:
            return DeviceCheck(
                dev.name, dev.driver, True, "simulated", "started by `labctl simulate`"
            )
        return DeviceCheck(
            dev.name, dev.driver, False, "unknown driver", f"known: {', '.join(KNOWN_DRIVERS)}"
        )
    except _SettingError as exc:
        return DeviceCheck(dev.name, dev.driver, False, "bad settings", str(exc))
    except LabctlError as exc:
        return DeviceCheck(dev.name, dev.driver, False, "unreachable", exc.user_message())


def _check_arm(dev: WorkcellDevice, clock: Clock) -> DeviceCheck:
    """A PF400: one ``sysState`` query (the arm does not move): answering, e-stop, power."""
    from .pf400 import PF400Arm

    arm = _build_pf400(dev, None, clock)  # type: ignore[arg-type] # the arm keeps no store
    assert isinstance(arm, PF400Arm)
    try:
        alarms = arm.alarms()
    finally:
        arm.close()
    if any(a.code == "offline" for a in alarms):
        return DeviceCheck(dev.name, dev.driver, False, "unreachable", alarms[0].message)
    if any(a.code == "estop" for a in alarms):
        return DeviceCheck(dev.name, dev.driver, False, "e-stop engaged", alarms[0].message)
    words = "; ".join(a.message for a in alarms) or "answers; no e-stop"
    return DeviceCheck(dev.name, dev.driver, True, "ready", words)


def _check_opentrons(dev: WorkcellDevice, clock: Clock) -> DeviceCheck:
    """Health, then the pipettes per mount and the modules, against the workcell's deck."""
    client = _opentrons_client(dev, clock)
    robot = _robot(dev)
    h = client.health()
    api = f"{h.min_protocol_api[0]}.{h.min_protocol_api[1]}-{h.max_protocol_api[0]}.{h.max_protocol_api[1]}"
    detail = f"{h.name or 'robot'}, software {h.api_version}, protocol API {api}"
    if h.robot_model != robot:
        return DeviceCheck(
            dev.name,
            dev.driver,
            False,
            f"{h.robot_model}, not {robot}",
            f"the workcell says {robot}; {detail}",
        )
    from .opentrons_instruments import check_words
    from .opentrons_protocol import DeckLayout

    deck = dev.settings.get("deck")
    try:
        layout = DeckLayout.from_deck(deck if isinstance(deck, dict) else None, robot)
    except (LabctlError, ValueError, TypeError, KeyError) as exc:
        return DeviceCheck(dev.name, dev.driver, False, "bad settings", f"'deck': {exc}")
    fits, words = check_words(client, layout)
    state = f"{h.robot_model} healthy" if fits else "does not fit the deck"
    return DeviceCheck(dev.name, dev.driver, fits, state, f"{detail}; {words}")


def _check_incubator(dev: WorkcellDevice, inc: SerialIncubator) -> DeviceCheck:
    try:
        st = inc.device_status()
        climate = inc.climate()
        alarms = inc.alarms()
    finally:
        inc.close()
    if st.door_open:
        state = "door open"
    elif st.error:
        state = "error latched"
    elif st.busy:
        state = "busy"
    else:
        state = "ready"
    parts = []
    if st.transfer_station_occupied is not None:
        parts.append(
            "transfer station " + ("occupied" if st.transfer_station_occupied else "empty")
        )
    for label, value, unit in (
        ("", climate.temperature_c, " degC"),
        ("CO2 ", climate.co2_pct, " %"),
        ("O2 ", climate.o2_pct, " %"),
        ("RH ", climate.humidity_pct, " %"),
    ):
        if value is not None:
            parts.append(f"{label}{value:g}{unit}")
    parts.extend(a.message for a in alarms if a.code != "door")
    ok = not st.error and not alarms
    return DeviceCheck(dev.name, dev.driver, ok, state, "; ".join(parts))


def format_checks(checks: list[DeviceCheck]) -> str:
    """The checks as an aligned text table (one line per device)."""
    rows = [("DEVICE", "DRIVER", "OK", "STATE", "DETAIL")]
    rows += [(c.name, c.driver, "ok" if c.ok else "FAIL", c.state, c.detail) for c in checks]
    widths = [max(len(r[i]) for r in rows) for i in range(4)]
    lines = ["  ".join(r[i].ljust(widths[i]) for i in range(4)) + "  " + r[4] for r in rows]
    return "\n".join(line.rstrip() for line in lines)


def devices_check_cli(args: argparse.Namespace) -> int:
    """``labctl devices check --workcell W [--db DB]``: print the table; 0 if all ok, else 1.

    The run database (``--db``, or the default one if it exists) is only read, for the
    operators' pending prompts.
    """
    path = getattr(args, "workcell", None)
    if not path:
        raise LabctlError("pass --workcell FILE: the workcell whose devices to check")
    workcell = load_workcell(path)
    clock = RealClock()
    db = getattr(args, "db", None)
    db_path = Path(db) if db else Store.default_path()
    store = Store.open(db_path, clock, create=False) if db or db_path.exists() else None
    try:
        checks = check_devices(workcell, store, clock)
    finally:
        if store is not None:
            store.close()
    print(format_checks(checks))
    failed = [c.name for c in checks if not c.ok]
    print(
        f"{len(checks) - len(failed)} of {len(checks)} devices ok"
        + (f"; failing: {', '.join(failed)}" if failed else "")
    )
    return 0 if not failed else 1
