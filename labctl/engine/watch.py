"""Watching the workcell between operations: device alarms, climate, plates left out.

Device alarms (door open, offline, CO2 out of range) are read every ``alarm_check_s``; a
condition raises a workcell alarm once and clears when a later check no longer reads it.
Incubator readings go into the trail every ``climate_record_s`` (console, batch record). A
plate out of the incubator longer than its protocol allows raises an alarm and a deviation.

In a dry run a :class:`~labctl.devices.QuietWatch` (the simulated workcell) says when no
device can have changed; the checks in between are slept through, and counted, so the
cadence stays that of an engine that woke for every check.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta

from labctl.devices import Device, DeviceAlarm, Incubator, QuietWatch
from labctl.engine.alarms import Alarms, plate_subject
from labctl.engine.config import EngineConfig
from labctl.engine.records import Picture
from labctl.errors import DeviceError
from labctl.store import Store


class DeviceWatch:
    """Periodic device alarm checks, climate records and the out-of-incubator watch."""

    def __init__(
        self,
        store: Store,
        cfg: EngineConfig,
        devices: Mapping[str, Device],
        alarms: Alarms,
        picture: Picture,
        quiet: QuietWatch | None,
    ) -> None:
        self.store = store
        self.cfg = cfg
        self.devices = devices
        self.alarms = alarms
        self.picture = picture
        self.quiet_watch = quiet
        self.next_check: datetime | None = None  # when the next periodic check is due
        self.checked_at: datetime | None = None  # when devices were last read
        self.checks_made = 0  # device alarm checks made (a dry run prints both)
        self.checks_skipped = 0  # ... and slept through because the watch said quiet
        self._next_climate: datetime | None = None
        self._out_alarmed: set[int] = set()  # task ids whose plate was reported out too long

    # ---- the cadence --------------------------------------------------------------------

    def _on_grid(self, due: datetime, t: datetime) -> datetime:
        """The first moment ``due + k * alarm_check_s`` (k >= 0) not before ``t``."""
        if t <= due:
            return due
        step = timedelta(seconds=self.cfg.alarm_check_s)
        return due + step * -((due - t) // step)  # ceil in whole microseconds

    def check_due(self, now: datetime) -> datetime | None:
        """When the next periodic check is due, as seen at ``now`` (checks slept through
        count as made on time)."""
        due = self.next_check
        if due is not None and self.quiet_watch is not None and now > due:
            later = self._on_grid(due, now)
            self.checks_skipped += (later - due) // timedelta(seconds=self.cfg.alarm_check_s)
            due = self.next_check = later
        return due

    def quiet(self, now: datetime) -> bool:
        """Whether the watch says no device can have changed since the last check."""
        since = self.checked_at
        return (
            self.quiet_watch is not None
            and since is not None
            and self.quiet_watch.quiet(since, now)
        )

    def next_wake(self, now: datetime) -> datetime | None:
        """When the loop must wake for a check: the due one, or, while the watch says quiet,
        the one due at or after the watch's next possible change."""
        due = self.check_due(now)
        if due is not None and self.quiet_watch is not None and self.quiet(now):
            change = self.quiet_watch.next_change(now)
            due = None if change is None else self._on_grid(due, change)
        return due

    # ---- the checks ---------------------------------------------------------------------

    def check(self, now: datetime) -> None:
        """Read every device's alarms if a check is due; raise new, clear gone conditions."""
        due = self.check_due(now)
        if due is not None and now < due:
            return
        self.next_check = now + timedelta(seconds=self.cfg.alarm_check_s)
        if self.quiet(now):
            # Each reading would equal the last check's: the alarms it left stand.
            self.checks_skipped += 1
            return
        self.checked_at = now
        self.checks_made += 1
        for name, dev in self.devices.items():
            try:
                current = {a.code: a for a in dev.alarms()}
            except DeviceError as exc:
                current = {"unreachable": DeviceAlarm(name, "unreachable", str(exc))}
            for code, a in current.items():
                self.alarms.raise_(None, name, code, a.message)
            for code in self.alarms.device_codes(name) - set(current):
                self.alarms.clear(None, name, code)
        self._record_climate(now)

    def _record_climate(self, now: datetime) -> None:
        if self._next_climate is not None and now < self._next_climate:
            return
        self._next_climate = now + timedelta(seconds=self.cfg.climate_record_s)
        for name, dev in self.devices.items():
            if not isinstance(dev, Incubator):
                continue
            try:
                c = dev.climate()
            except (DeviceError, NotImplementedError):
                continue
            if all(v is None for v in (c.temperature_c, c.co2_pct, c.humidity_pct, c.o2_pct)):
                continue
            self.store.record(
                "climate",
                entity="device",
                actor=self.cfg.actor,
                reason=f"{name} climate",
                data={
                    "device": name,
                    "temperature_c": c.temperature_c,
                    "co2_pct": c.co2_pct,
                    "humidity_pct": c.humidity_pct,
                    "o2_pct": c.o2_pct,
                },
            )

    def plates_out(self, now: datetime) -> None:
        """A plate out longer than its protocol allows raises an alarm and a deviation."""
        for tid in sorted(self.picture.active):
            c = self.picture.chains[tid]
            since = c.out_since()
            if since is None or tid in self._out_alarmed or c.max_out_s is None:
                continue
            out_s = (now - since).total_seconds()
            if out_s > c.max_out_s:
                self._out_alarmed.add(tid)
                why = f"plate {c.plate} has been out of the incubator {out_s / 60:.0f} min (limit {c.max_out_s / 60:g} min) during {c.key}"
                self.alarms.raise_(c.run_id, plate_subject(c), "out-too-long", why)
                self.store.record(
                    "deviation",
                    entity="task",
                    entity_id=c.task_id,
                    actor=self.cfg.actor,
                    reason=why,
                    data={"kind": "out_of_incubator", "task": c.key, "seconds": out_s},
                )
        out_now = {
            (c.run_id, plate_subject(c))
            for c in (self.picture.chains[t] for t in self.picture.active)
            if c.out_since() is not None
        }
        for run_id, subject in self.alarms.standing("out-too-long"):
            if (run_id, subject) not in out_now:
                self.alarms.clear(run_id, subject, "out-too-long")

    def plates_out_wakes(self) -> list[datetime]:
        """When a plate now out would pass its limit (one second after it)."""
        out = []
        for tid in self.picture.active:
            c = self.picture.chains[tid]
            since = c.out_since()
            if since is not None and tid not in self._out_alarmed and c.max_out_s is not None:
                out.append(since + timedelta(seconds=c.max_out_s + 1))
        return out
