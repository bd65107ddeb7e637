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


@pytest.mark.parametrize(
    ("arm", "batch", "seed"),
    # The arm with one plate a run is tried by the pick-and-place test below; with two
    # plates a run here (CI time).
    [(False, 1, 20261206), (True, 2, 20261207)],
    ids=["hands", "batch"],
)
def test_kills_crashes_and_a_rollback_lose_and_double_nothing(
    tmp_path: Path, arm: bool, batch: int, seed: int
) -> None:
    """With ``batch`` 2 two plates are fed in one robot run; every well of each plate is
    still fed once, counted from the robot's own log at each plate's deck position."""
    lines: list[str] = []
    live = LiveWorkcell(
        tmp_path, plates=2, pace=1440.0, seed=seed, say=lines.append, arm=arm, batch=batch
    )
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
    if batch > 1:
        assert live.planned is not None and live.planned.riders, "the run has no batches"
        assert live.shared_runs() >= 1, f"no robot run fed two plates\n{report}"


def test_a_kill_between_the_arms_pick_and_place_loses_and_doubles_nothing(
    tmp_path: Path,
) -> None:
    """SIGKILL the engine the moment the arm's own log shows a plate gripped and not yet
    placed; at a later move, crash the simulators the same way (the arm restarts with the
    plate in its gripper). The engine that starts again does not know the move: it asks,
    and the simulated operator answers from where the plate is (on the deck: 'done'; in
    the gripper: put back, 'retry'); every well is fed once, every plate carried to the
    deck and back once per feed."""
    from tests.live_harness import WALL, read_jsonl

    lines: list[str] = []
    live = LiveWorkcell(tmp_path, plates=1, pace=120.0, seed=7, say=lines.append, arm=True)
    log = live.wc / "devices" / "arm_actions.jsonl"
    chaos = [live.kill_engine, live.crash_devices]
    try:
        live.start_simulators()
        proto, day0 = short_protocol(live.practice_now(), feeds=2, gap_h=0.25, text=protocol_text)
        live.register(proto, day0)
        live.start_engine()
        deadline = WALL.monotonic() + 300.0
        seen = 0  # grips already acted on: two feeds, four moves in which to catch one
        while WALL.monotonic() < deadline and chaos:
            results = [e["result"] for e in read_jsonl(log)]
            grips = results.count("gripped")
            if results and results[-1] == "gripped" and grips > seen:
                chaos.pop(0)()
                seen = grips
            WALL.sleep(0.002)
        assert not chaos, "the arm gripped a plate too few times to kill and crash at both"
        state = live.run_state()
        while WALL.monotonic() < deadline and state != "completed":
            live.person()
            WALL.sleep(0.5)
            state = live.run_state()
    finally:
        live.stop()
    t = live.tally()
    report = "\n".join([*lines, t.line(live.kills, live.crashes, 0), *t.lost, *t.doubled])
    assert state == "completed", report
    assert t.lost == [] and t.doubled == [], report
    # The move was in doubt and a person (the bot) settled it from the arm and stations.
    bot = (live.wc / "operator-bot.log").read_text(encoding="utf-8")
    assert "to_deck on arm-sim" in bot and "answered '" in bot, bot
