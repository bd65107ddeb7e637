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
        """Every alarm (cleared ones too), oldest first."""
        extra, params = (" WHERE run_id = ?", [run_id]) if run_id is not None else ("", [])
        return self._rows(ALARMS, f"SELECT * FROM alarms{extra} ORDER BY id", params)
