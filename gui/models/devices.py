"""The devices view: each device's state, what it does now and next, its last error, its
alarms and, for incubators, the latest climate reading.

Climate readings are events of entity ``device`` and action ``climate`` whose data holds
``device``, ``temperature_c``, ``co2_pct``, ``humidity_pct``, ``o2_pct``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from labctl.gui.models.common import (
    TERMINAL_JOB_STATES,
    RunData,
    float_or_none,
    job_duration_s,
    job_label,
    job_params,
    tone_of,
    workcell_zone,
)
from labctl.gui.models.timeline import Bar
from labctl.store.models import Alarm, Event, Job, Prompt


@dataclass(frozen=True)
class AlarmRow:
    id: int
    run_id: int | None
    device: str | None
    severity: str
    code: str
    message: str
    state: str  # active (unacknowledged) or acknowledged
    raised_at: datetime
    acknowledged_by: str | None

    @classmethod
    def of(cls, a: Alarm) -> AlarmRow:
        return cls(
            a.id, a.run_id, a.device, a.severity, a.code, a.message, a.state, a.raised_at,
            a.acknowledged_by,
        )  # fmt: skip


@dataclass(frozen=True)
class ClimateReading:
    temperature_c: float | None
    co2_pct: float | None
    humidity_pct: float | None
    o2_pct: float | None
    at: datetime

    @property
    def text(self) -> str:
        parts = []
        if self.temperature_c is not None:
            parts.append(f"{self.temperature_c:.1f} °C")
        if self.co2_pct is not None:
            parts.append(f"CO₂ {self.co2_pct:.1f} %")
        if self.o2_pct is not None:
            parts.append(f"O₂ {self.o2_pct:.1f} %")
        if self.humidity_pct is not None:
            parts.append(f"RH {self.humidity_pct:.0f} %")
        return ", ".join(parts) or "no readings"


def climate_of(ev: Event) -> ClimateReading:
    d = ev.data
    return ClimateReading(
        float_or_none(d.get("temperature_c")),
        float_or_none(d.get("co2_pct")),
        float_or_none(d.get("humidity_pct")),
        float_or_none(d.get("o2_pct")),
        ev.time,
    )


@dataclass(frozen=True)
class DeviceRow:
    name: str
    role: str
    state: str  # idle, busy, waiting, fault, alarm
    tone: str
    current: str | None  # what it does now
    since: datetime | None
    until: datetime | None
    next_job: str | None
    next_at: datetime | None
    climate: ClimateReading | None
    last_error: str | None
    last_error_at: datetime | None
    alarms: tuple[AlarmRow, ...]
    timezone: str
    next_window_end: datetime | None = None  # the next job's task must start by then


_ROLE_TEXT = {
    "liquid_handler": "liquid handler",
    "incubator": "incubator",
    "operator": "operator",
    "mover": "plate mover",
}


def is_device(subject: str | None) -> bool:
    """Whether an alarm's subject names a device of the workcell (not a run, plate, task,
    prompt, nor the engine itself)."""
    if not subject or subject == "engine":
        return False
    return not subject.startswith(("run ", "task ", "plate ", "prompt "))


def device_rows(
    datas: Sequence[RunData],
    bars: Sequence[Bar],
    alarms: Sequence[AlarmRow],
    prompts: Sequence[Prompt],
    climate: Mapping[str, ClimateReading],
    now: datetime,
) -> tuple[DeviceRow, ...]:
    """Each device's state: alarm > fault (a failed job waits for a decision) > busy > idle."""
    roles: dict[str, str] = {}
    by_device: dict[str, list[Job]] = {}
    names: dict[int, str] = {}
    tz = (workcell_zone(datas[0].run.workcell_text) or datas[0].run.timezone) if datas else "UTC"
    for d in datas:
        for j in d.jobs:
            mine = by_device.get(j.device)
            if mine is None:
                mine = by_device[j.device] = []
                spec = j.spec if isinstance(j.spec, dict) else {}
                roles[j.device] = _ROLE_TEXT.get(str(spec.get("role")), str(spec.get("role") or ""))
            mine.append(j)
            names[j.id] = d.run.name
    bar_of = {b.job_id: b for b in bars}
    window_end = {b.task_id: b.window_end for b in bars if b.main}
    # Only the workcell's devices: alarms about a run, a plate or a task are not devices'.
    devices = (
        set(roles) | {a.device for a in alarms if a.device and is_device(a.device)} | set(climate)
    )
    waiting = {
        p.job_id
        for p in prompts
        if p.state == "open" and p.kind in ("recovery", "interrupted", "in-doubt")
    }
    out = []
    for name in sorted(devices):
        mine = by_device.get(name, [])
        running = sorted(
            (j for j in mine if j.state == "running"), key=lambda j: j.started_at or now
        )
        failed = [j for j in mine if j.state in ("failed", "interrupted")]
        dev_alarms = tuple(a for a in alarms if a.device == name)
        upcoming = sorted(
            (bar_of[j.id] for j in mine if j.id in bar_of and bar_of[j.id].planned
             and j.state not in TERMINAL_JOB_STATES),
            key=lambda b: b.start,
        )  # fmt: skip
        current = since = until = None
        if any(a.state == "active" for a in dev_alarms):
            state = "alarm"
        elif any(j.id in waiting for j in failed):
            state = "needs decision"
        elif running:
            state = "waiting" if roles.get(name) == "operator" else "busy"
        else:
            state = "idle"
        if running:
            j = running[0]
            b = bar_of.get(j.id)
            plate = b.plate if b else str(job_params(j).get("plate") or "")
            current = f"{job_label(j)} · {plate} · {names.get(j.id, '')}".strip(" ·")
            if len(running) > 1:
                current += f" (+{len(running) - 1} more)"
            since = j.started_at
            until = (j.started_at + timedelta(seconds=job_duration_s(j))) if j.started_at else None
        errors: list[tuple[datetime, str]] = []
        for j in mine:
            if j.state in ("failed", "interrupted") or (
                isinstance(j.result, dict) and j.result.get("error")
            ):
                msg = j.result.get("error") if isinstance(j.result, dict) else None
                errors.append(
                    (j.finished_at or j.started_at or now, str(msg or f"{j.op} {j.state}"))
                )
        errors += [(a.raised_at, a.message) for a in dev_alarms]
        last = max(errors, key=lambda e: e[0]) if errors else None
        nxt = upcoming[0] if upcoming else None
        out.append(
            DeviceRow(
                name=name,
                role=roles.get(name, "incubator" if name in climate else ""),
                state=state,
                tone=tone_of(state),
                current=current,
                since=since,
                until=until,
                next_job=f"{nxt.label} · {nxt.plate}" if nxt else None,
                next_at=nxt.start if nxt else None,
                next_window_end=window_end.get(nxt.task_id) if nxt else None,
                climate=climate.get(name),
                last_error=last[1] if last else None,
                last_error_at=last[0] if last else None,
                alarms=dev_alarms,
                timezone=tz,
            )
        )
    return tuple(out)
