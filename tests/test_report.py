"""The batch record: plan against what happened, deviations, QC, alarms, audit check."""

from __future__ import annotations

from pathlib import Path

from labctl.reports.batch import batch_record
from tests.test_engine import World


def test_batch_record_sections_and_escaping(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.devices["operator"].qc_value = 10.0  # the day-1 sample fails its gate
    w.command("start")
    task = w.plan.feeds()[-1].key
    w.command("skip", task=task, plate="P2", reason="<b>contaminated</b>")
    w.run_until(lambda: w.state == "holding", limit_days=3)
    page = batch_record(w.store, w.run_id)
    for title in ("Deviations", "QC values", "Reagent lots", "Alarms", "Audit trail"):
        assert f"<h2>{title}</h2>" in page
    assert "&lt;b&gt;contaminated&lt;/b&gt;" in page and "<b>contaminated" not in page
    assert "<td>FAIL</td>" in page  # the failed QC value
    assert "<td>hold</td>" in page  # the held run's alarm
    assert "Hash chain verified" in page
    assert "<h2>Reagent lots</h2>\n<p>None recorded.</p>" in page
