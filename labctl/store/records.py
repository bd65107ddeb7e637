"""Batch-record measurements: QC values and the reagent lots a run used."""

from __future__ import annotations

from datetime import date

from labctl.store.models import QC_VALUES, REAGENT_LOTS, QcValue, ReagentLot
from labctl.store.rows import RowStore

__all__ = ["RecordStore"]


class RecordStore(RowStore):
    """Records and reads QC values and reagent lots (rows without state: added, never moved)."""

    def insert_qc_value(
        self,
        run_id: int,
        *,
        measure: str,
        value: float,
        unit: str,
        actor: str,
        min_value: float | None = None,
        max_value: float | None = None,
        task_id: int | None = None,
    ) -> QcValue:
        """Record a QC measurement; ``passed`` is min_value <= value <= max_value (bounds optional)."""
        passed = (min_value is None or value >= min_value) and (
            max_value is None or value <= max_value
        )
        values = {
            "run_id": run_id,
            "task_id": task_id,
            "measure": measure,
            "value": float(value),
            "unit": unit,
            "min_value": min_value,
            "max_value": max_value,
            "passed": passed,
            "recorded_at": self.clock.now(),
        }
        return self._insert(QC_VALUES, values, actor=actor)

    def insert_reagent_lot(
        self,
        run_id: int,
        *,
        reagent: str,
        lot: str,
        actor: str,
        expiry: date | None = None,
        task_id: int | None = None,
    ) -> ReagentLot:
        """Record which lot of a reagent a run (or one task of it) used."""
        values = {
            "run_id": run_id,
            "task_id": task_id,
            "reagent": reagent,
            "lot": lot,
            "expiry": expiry,
            "recorded_at": self.clock.now(),
        }
        return self._insert(REAGENT_LOTS, values, actor=actor)

    def qc_values(self, run_id: int) -> list[QcValue]:
        return self._rows(
            QC_VALUES, "SELECT * FROM qc_values WHERE run_id = ? ORDER BY id", [run_id]
        )

    def reagent_lots(self, run_id: int) -> list[ReagentLot]:
        return self._rows(
            REAGENT_LOTS, "SELECT * FROM reagent_lots WHERE run_id = ? ORDER BY id", [run_id]
        )
