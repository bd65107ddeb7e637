"""Issue 16 B in the console: the deck and slot maps (Maps tab), a supervisor's manual device
actions from the console, and the wall monitor, on the day-12 world of
tests/console_fixtures.py (P1's feed failed on the robot: its plate is on the deck, a
recovery prompt is open, the incubator reports low CO2)."""

from __future__ import annotations

import os
import shutil
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from console_fixtures import (
    Sim,
    copy_world,
    fast_dir,
    make_practice,
    open_sim,
    shared_world,
    shown_window,
)

from labctl.clock import VirtualClock
from labctl.drivers.opentrons_protocol import DeckLayout
from labctl.engine.manual import DEVICE_ACTION
from labctl.gui.main_window import MainWindow
from labctl.gui.maps import DeckCard, SlotCard
from labctl.gui.models.maps import _build, deck_roles, maps_of
from labctl.gui.models.wall import span_text, wall_board
from labctl.gui.wall import CLOCK_PX, LINE_PX
from labctl.reports.locations import PlateLocation

ROOT = Path(__file__).resolve().parent.parent
SHOTS = ROOT / "docs" / "screenshots"
WALL = datetime(2026, 12, 13, 8, 0, tzinfo=timezone.utc)


@pytest.mark.parametrize(
    ("deck", "robot"),
    [
        (None, "OT-2"),
        ({"plate": [1, 3]}, "OT-2"),
        ({"plate": [1, 3, 6, 9], "reservoir": 5}, "OT-2"),
        (None, "Flex"),
        ({"plate": ["D1", "C2"], "tips": ["A2"]}, "Flex"),
    ],
)
def test_deck_roles_are_the_drivers(deck: dict | None, robot: str) -> None:
    # The console may not import drivers: its copy of the deck layout must agree with them.
    driver = {slot: role for role, slot in DeckLayout.from_deck(deck, robot)._slots()}
    ours = {slot: role for slot, (role, _) in deck_roles(deck, robot).items()}
    if robot == "OT-2":
        assert ours.pop("12") == "trash"  # the OT-2's fixed trash, which the driver leaves out
    assert ours == driver


def test_maps_place_each_plate_from_the_workcell_and_the_jobs() -> None:
    devices = {
        "ot2-a": ("opentrons", {"robot": "OT-2", "deck": {"plate": [1, 3], "reservoir": 2}}),
        "inc-1": ("cytomat", {"slots": 12}),
        "arm": ("pf400", {"stations": {"inc-1/transfer": 1, "ot2-a/1": 2}}),
    }
    at = datetime(2026, 12, 13, 2, 0, tzinfo=timezone.utc)
    located = [
        ("P1", PlateLocation("P1", "ot2-a deck position 3", at)),
        ("P2", PlateLocation("P2", "inc-1 slot 7", at)),
        ("P3", PlateLocation("P3", "inc-1 transfer station", at, "fetch failed", certain=False)),
        ("P4", PlateLocation("P4", "on the bench, with the operator", at)),
    ]
    maps = _build(devices, located)
    (deck,) = maps.decks
    assert deck.position("3").plates == ("P1",) and deck.position("3").role == "plate"
    assert deck.position("2").role == "medium" and not deck.position("2").default
    assert deck.position("10").role == "tips" and deck.position("10").default
    (inc,) = maps.incubators
    assert (inc.slots, dict(inc.plates), inc.transfer) == (12, {7: "P2"}, ("P3 (not certain)",))
    assert maps.elsewhere == ("P4: on the bench, with the operator",)
    assert maps.movers == (("arm", ("inc-1/transfer", "ot2-a/1")),)


# --- in the console -------------------------------------------------------------------------


@pytest.fixture
def sim() -> Sim:
    folder = fast_dir("labctl-console-maps-")
    world = copy_world(shared_world(), folder / "copy")
    make_practice(world.db)  # no accounts: the console's user is a name
    s = open_sim(world)
    yield s
    s.close()
    shutil.rmtree(folder, ignore_errors=True)


@pytest.fixture
def win(qtbot, sim: Sim) -> MainWindow:  # noqa: ANN001 - pytest-qt's fixture
    w = shown_window(qtbot, sim, VirtualClock(WALL), actor="alice")
    qtbot.waitUntil(lambda: w.snapshot is not None, timeout=10_000)
    yield w
    w.close()


def _shot(widget, name: str) -> None:  # noqa: ANN001
    """Save a screenshot for docs/ (LABCTL_SCREENSHOTS=1 only: tests leave docs/ alone)."""
    if os.environ.get("LABCTL_SCREENSHOTS"):
        widget.grab().save(str(SHOTS / name))


def test_the_maps_tab_shows_the_deck_and_the_incubator(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    maps = maps_of(sim.store)
    # The day-12 world: P1 went to the robot for its feed (which failed), P2 is in its slot.
    (deck,) = maps.decks
    assert deck.device == "ot2-sim"
    assert [p.slot for row in deck.rows for p in row if p.plates] == ["1"]
    (inc,) = maps.incubators
    assert inc.device == "inc-sim" and "P2" in inc.plates.values()
    win.show_tab(win.tabs.indexOf(win.maps_view))
    qtbot.waitUntil(lambda: win.maps_view.maps is not None, timeout=10_000)
    cards = win.maps_view.cards
    assert [type(c) for c in cards[:2]] == [DeckCard, SlotCard]
    assert "P1" in cards[0].grab().toImage().text("") or cards[0].deck.position("1").plates
    _shot(win, "maps.png")


def test_a_device_action_from_the_console_is_refused_while_a_task_needs_the_device(
    qtbot, win: MainWindow, sim: Sim
) -> None:  # noqa: ANN001
    assert win.device_actions.action.isEnabled()  # practice database: the user may
    win.device_actions.open()
    qtbot.waitUntil(lambda: win.device_actions.dialog is not None, timeout=10_000)
    dlg = win.device_actions.dialog
    assert dlg.device.currentData() == ("incubator", "inc-sim")
    # The gate takes no slot: the dialog does not ask for one, nor send it.
    dlg.action.setCurrentIndex(dlg.action.findData("open-gate"))
    assert not dlg.form.isRowVisible(dlg.slot)
    assert dlg.args() == {"device": "inc-sim", "action": "open-gate"}
    dlg.action.setCurrentIndex(dlg.action.findData("present"))
    assert dlg.form.isRowVisible(dlg.slot)
    dlg.slot.setValue(2)
    dlg.reason.setText("check P2 by eye")
    dlg.send()
    qtbot.waitUntil(lambda: bool(sim.store.pending_commands()), timeout=10_000)
    (cmd,) = sim.store.pending_commands()
    assert (cmd.verb, cmd.actor, cmd.args) == (
        DEVICE_ACTION,
        "alice",
        {"device": "inc-sim", "action": "present", "slot": 2},
    )
    sim.engine.step()
    qtbot.waitUntil(lambda: dlg.verdict.text().startswith("✕ not done"), timeout=10_000)
    assert "inc-sim is in use: task r1:d12-feed" in dlg.verdict.text()
    dlg.close()


def test_the_wall_monitor_reads_from_across_the_room(qtbot, win: MainWindow, sim: Sim) -> None:  # noqa: ANN001
    board = wall_board(win.snapshot, sim.clock.now(), "Europe/Stockholm")
    # The failed feed waits for a person (its default applies in 15 min), the CO2 alarm too.
    assert board.person[0].text.startswith("Kriks DA batch 2x6w: ")
    assert "default 'hold' in 1" in board.person[0].detail
    assert any(line.text.startswith("ALARM inc-sim co2-low") for line in board.person)
    # Due next: the failed feed, whose time has come (it waits for its prompt's answer).
    assert board.next[0].detail == "P1 · due 12 min ago (08:57)"
    assert board.runs[0].detail.startswith("day 12 of 25")
    assert span_text(3 * 3600 + 300) == "3 h 05 min" and span_text(42 * 60) == "42 min"
    # Late: a step whose window ended and is not done (an hour on, the failed feed's has).
    later = wall_board(win.snapshot, sim.clock.now() + timedelta(hours=3), "Europe/Stockholm")
    assert any("late: its window ended" in line.detail for line in later.late)

    view = win.open_wall()
    qtbot.waitUntil(lambda: view.board is not None, timeout=10_000)
    assert view.isFullScreen() and not view.findChildren(type(win.maps_view.actions_button))
    assert f"font-size: {CLOCK_PX}px" in view.clock_label.styleSheet()
    texts = [w.text() for w in view.findChildren(type(view.clock_label))]
    assert any(t.startswith("⚑ Kriks DA batch 2x6w") or t.startswith("✕ Kriks") for t in texts)
    assert any(
        f"font-size: {LINE_PX}px" in w.styleSheet()
        for w in view.findChildren(type(view.clock_label))
    )
    view.resize(1920, 1080)
    _shot(view, "wall.png")
    win.close()
    assert not view.isVisible()  # it closes with the console
