"""Alarms: raised by the engine or a device, acknowledged and cleared by the operator."""

from __future__ import annotations

from labctl.errors import InvalidTransition
from labctl.store.models import ALARMS, Alarm, Event
from labctl.store.rows import RowStore

__all__ = ["AlarmStore"]


class AlarmStore(RowStore):
    """Raises, acknowledges, clears and reads alarms (active -> acknowledged -> cleared)."""

    def insert_alarm(
        self,
        *,
        severity: str,
        code: str,
        message: str,
        actor: str,
        run_id: int | None = None,
        device: str | None = None,
    ) -> Alarm:
        """Raise an alarm (state 'active', raised now by ``actor``)."""
        values = {
            "run_id": run_id,
            "device": device,
            "severity": severity,
            "code": code,
            "message": message,
            "state": "active",
            "raised_at": self.clock.now(),
            "raised_by": actor,
        }
        return self._insert(ALARMS, values, actor=actor)

    def acknowledge_alarm(self, alarm_id: int, *, actor: str, reason: str = "") -> Event:
        """active -> acknowledged (the condition may persist until cleared)."""
        return self.transition(
            "alarm",
            alarm_id,
            "acknowledged",
            expected_from="active",
            actor=actor,
            reason=reason,
            updates={"acknowledged_at": self.clock.now(), "acknowledged_by": actor},
        )

    def clear_alarm(self, alarm_id: int, *, actor: str, reason: str = "") -> Event:
        """active or acknowledged -> cleared."""
        with self.atomic():
            current = self.get_alarm(alarm_id).state
            if current not in ("active", "acknowledged"):
                raise InvalidTransition(f"alarm {alarm_id} is {current!r}: cannot clear it")
            return self.transition(
                "alarm",
                alarm_id,
                "cleared",
                expected_from=current,
                actor=actor,
                reason=reason,
                updates={"cleared_at": self.clock.now(), "cleared_by": actor},
            )

    def get_alarm(self, alarm_id: int) -> Alarm:
        return self._get(ALARMS, alarm_id)

    def active_alarms(self, run_id: int | None = None) -> list[Alarm]:
        """Alarms not yet cleared (acknowledged ones included), oldest first."""
        extra, params = (" AND run_id = ?", [run_id]) if run_id is not None else ("", [])
        return self._rows(
            ALARMS,
            f"SELECT * FROM alarms WHERE state IN ('active', 'acknowledged'){extra} ORDER BY id",
            params,
        )

    def alarms(self, run_id: int | None = None) -> list[Alarm]:
        """Every alarm (cleared ones too), oldest first; ``run_id``: those filed under it."""
        extra, params = (" WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
        return self._rows(ALARMS, f"SELECT * FROM alarms{extra} ORDER BY id", params)

    def alarms_for_run(self, run_id: int, *, active_only: bool = False) -> list[Alarm]:
        """The alarms that concern a run, oldest first: those filed under it, and the
        workcell's own (device alarms, filed under no run) that stood while the run was
        registered and not yet finished: a door left open concerns every run on it."""
        active = " AND a.state IN ('active', 'acknowledged')" if active_only else ""
        return self._rows(
            ALARMS,
            "SELECT a.* FROM alarms a JOIN runs r ON r.id = ? WHERE "
            "(a.run_id = r.id OR (a.run_id IS NULL"
            " AND (a.cleared_at IS NULL OR a.cleared_at >= r.created_at)"
            " AND (r.state NOT IN ('completed', 'aborted', 'failed')"
            " OR a.raised_at <= r.updated_at)))"
            f"{active} ORDER BY a.id",
            [run_id],
        )
