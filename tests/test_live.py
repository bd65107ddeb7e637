"""The live harness, short: separate processes, paced, with engine kills, a device crash
and a database rollback; nothing lost and nothing doubled, counted from the devices' logs.
``bench/soak.py`` runs the long one."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from tests.helpers import protocol_text
from tests.live_harness import LiveWorkcell, chaos, short_protocol

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="the practice workcell's processes need Linux"
)


def test_kills_crashes_and_a_rollback_lose_and_double_nothing(tmp_path: Path) -> None:
    lines: list[str] = []
    live = LiveWorkcell(tmp_path, plates=2, pace=1440.0, seed=20261206, say=lines.append)
    try:
        live.start_simulators()
        proto, day0 = short_protocol(live.practice_now(), feeds=4, gap_h=3.0, text=protocol_text)
        live.register(proto, day0)
        live.start_engine()
        state = chaos(live, kills=3, crashes=1, rollbacks=1, limit_s=150.0)
    finally:
        live.stop()
    t = live.tally()
    report = "\n".join(
        [*lines, t.line(live.kills, live.crashes, live.rollbacks), *t.lost, *t.doubled]
    )
    assert state == "completed", report
    assert live.kills >= 1 and live.crashes + live.rollbacks >= 1, report
    assert t.lost == [] and t.doubled == [], report
