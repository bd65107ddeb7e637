"""Manual device actions (issue 16): a supervisor's ``device-action`` command goes through
the engine (labctl.engine.manual) on the fake devices of tests/fakes.py and on the
Cytomat driver against its simulator, and is refused while a run's task needs the device."""

from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path

import pytest
from console_fixtures import copy_world, fast_dir, open_sim, shared_world
from fakes import fake_workcell

from labctl.accounts import Role
from labctl.clock import VirtualClock
from labctl.drivers.cytomat import CytomatDriver
from labctl.drivers.incubators import SerialIncubator
from labctl.engine import Engine
from labctl.engine.manual import DEVICE_ACTION
from labctl.simulators.cytomat import CytomatConfig, CytomatSim
from labctl.simulators.serial_link import PtyLink
from labctl.store import Store
from tests.helpers import run_cli

NOW = datetime(2026, 12, 13, 3, 0, tzinfo=timezone.utc)


def _engine(tmp_path: Path) -> tuple[Store, Engine, dict]:
    clock = VirtualClock(NOW)
    store = Store.open(tmp_path / "labctl.db", clock, create=True)
    devices = fake_workcell(clock, arm=True)
    return store, Engine(store, clock, devices), devices


def _send(store: Store, engine: Engine, actor: str = "alice", **args: object):  # noqa: ANN202
    cmd = store.insert_command(DEVICE_ACTION, actor=actor, args=args, reason="look at the plate")
    engine.step()
    return store.get_command(cmd.id)


def test_a_manual_action_drives_the_device_and_is_recorded(tmp_path: Path) -> None:
    store, engine, devices = _engine(tmp_path)
    with store:
        cmd = _send(store, engine, device="inc-sim", action="present", slot=3)
        assert cmd.state == "applied", cmd.result
        assert cmd.result["outcome"] == "succeeded"
        # The fake incubator did it once, and only when the engine applied the command.
        (act,) = devices["inc-sim"].actions
        assert (act["kind"], act["slot"]) == ("fetch", 3)
        (ev,) = store.events(entity="device", action=DEVICE_ACTION, limit=None)
        assert (ev.actor, ev.data["device"], ev.data["outcome"]) == (
            "alice",
            "inc-sim",
            "succeeded",
        )
        assert ev.reason == "look at the plate"

        back = _send(store, engine, device="inc-sim", action="put-away", slot=3)
        assert back.state == "applied" and len(devices["inc-sim"].actions) == 2
        move = _send(
            store, engine, device="arm-sim", action="move", source="inc-sim/transfer",
            destination="ot2-sim/1", plate="P1",
        )  # fmt: skip
        assert move.state == "applied"
        assert devices["arm-sim"].actions[0]["destination"] == "ot2-sim/1"

        # What a device cannot do, or a device that is not there, is refused, saying so.
        lh = _send(store, engine, device="ot2-sim", action="present", slot=1)
        assert lh.state == "rejected" and "ot2-sim cannot 'present'" in lh.result["reason"]
        gone = _send(store, engine, device="inc-9", action="present", slot=1)
        assert gone.state == "rejected" and "no device 'inc-9'" in gone.result["reason"]
        bad = _send(store, engine, device="inc-sim", action="present", slot="x")
        assert bad.state == "rejected" and "whole number" in bad.result["reason"]
        assert len(devices["inc-sim"].actions) == 2


def test_only_a_supervisor_acts_on_a_database_with_accounts(tmp_path: Path) -> None:
    store, engine, devices = _engine(tmp_path)
    with store:
        for name, role in (("olga", Role.OPERATOR), ("alice", Role.SUPERVISOR)):
            store.add_user(name, role, "correct horse 1", full_name=name, actor="ada", now=NOW)
        no = _send(store, engine, actor="olga", device="inc-sim", action="present", slot=2)
        assert no.state == "rejected" and "operator may not" in no.result["reason"]
        assert devices["inc-sim"].actions == []
        yes = _send(store, engine, actor="alice", device="inc-sim", action="present", slot=2)
        assert yes.state == "applied"


def test_refused_while_a_task_under_way_needs_the_device() -> None:
    # Day 12 of a Kriks run: P1's feed failed on the robot and waits for a recovery answer;
    # its plate is out, and the jobs that bring it home need the incubator.
    world = copy_world(shared_world(), fast_dir("labctl-device-actions-") / "w")
    sim = open_sim(world)
    try:
        inc = sim.devices["inc-sim"]
        before = len(inc.actions)
        cmd = _send(sim.store, sim.engine, device="inc-sim", action="present", slot=5)
        assert cmd.state == "rejected"
        assert "inc-sim is in use: task r1:d12-feed" in cmd.result["reason"]
        assert "/P1 of run 1 is under way" in cmd.result["reason"]
        assert len(inc.actions) == before
        assert sim.store.events(entity="device", action=DEVICE_ACTION, limit=None) == []
    finally:
        sim.close()


def test_a_supervisor_opens_and_closes_a_cytomat_gate_through_the_engine(tmp_path: Path) -> None:
    """The real path: the engine's ManualActions, the Cytomat adapter and driver, over a
    pty to the simulated Cytomat; what the device's own gate sensor says is the proof."""
    clock = VirtualClock(NOW)
    sim = CytomatSim(clock, CytomatConfig(slots=10), plates={2: "P1"})
    store = Store.open(tmp_path / "labctl.db", clock, create=True)
    with PtyLink(sim) as link, store:
        driver = CytomatDriver("inc-1", link.port, clock, slots=10, reply_timeout_s=0.3)
        inc = SerialIncubator("inc-1", driver, clock, setpoints={"temperature": 37.0, "co2": 5.0})
        try:
            engine = Engine(store, clock, {"inc-1": inc})
            opened = _send(store, engine, device="inc-1", action="open-gate")
            assert opened.state == "applied", opened.result
            assert opened.result["detail"] == "the gate is open"
            assert inc.device_status().gate_open is True
            shut = _send(store, engine, device="inc-1", action="close-gate")
            assert shut.state == "applied" and inc.device_status().gate_open is False
            events = store.events(entity="device", action=DEVICE_ACTION, limit=None)
            assert [(e.data["action"], e.data["outcome"]) for e in events] == [
                ("open-gate", "succeeded"),
                ("close-gate", "succeeded"),
            ]
            assert sim.slots == {2: "P1"}  # no plate moved
        finally:
            inc.close()


def test_a_gate_action_is_refused_where_the_device_has_no_gate_command(tmp_path: Path) -> None:
    store, engine, devices = _engine(tmp_path)
    with store:
        cmd = _send(store, engine, device="inc-sim", action="open-gate")
        assert cmd.state == "rejected"
        assert cmd.result["reason"] == "inc-sim cannot 'open-gate' (it can: present, put-away)"
        assert devices["inc-sim"].actions == []


# --- the CLI twin: labctl device-action -------------------------------------------------------


def test_the_cli_queues_a_device_action_for_the_engine(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, engine, devices = _engine(tmp_path)
    db = str(tmp_path / "labctl.db")
    with store:
        store.set_kind("practice", actor="trainer")  # no accounts needed
        code, out, err = run_cli(
            capsys, "device-action", "inc-sim", "present", "--slot", "4", "--reason",
            "look at P4", "--db", db, "--wait", "0", "--actor", "alice",
        )  # fmt: skip
        assert code == 3, err  # no engine serves the database: queued
        (cmd,) = store.pending_commands()
        assert (cmd.verb, cmd.actor, cmd.reason) == (DEVICE_ACTION, "alice", "look at P4")
        assert cmd.args == {"device": "inc-sim", "action": "present", "slot": 4}
        assert devices["inc-sim"].actions == []  # nothing moves before the engine says so
        engine.step()
        assert store.get_command(cmd.id).state == "applied"
        ((act),) = devices["inc-sim"].actions
        assert (act["kind"], act["slot"]) == ("fetch", 4)


@pytest.mark.parametrize(
    ("argv", "why"),
    [
        (["inc-sim", "present", "--reason", "x"], "present needs --slot N"),
        (["inc-sim", "open-gate", "--slot", "2", "--reason", "x"], "open-gate takes no --slot"),
        (["arm-sim", "move", "--from", "nest", "--reason", "x"], "move needs --from STATION"),
        (["inc-sim", "open-gate", "--plate", "P1", "--reason", "x"], "takes no --from, --to"),
        (["inc-sim", "open-gate"], "needs --reason"),
        (["inc-sim", "open-door", "--reason", "x"], "invalid choice: 'open-door'"),
    ],
)
def test_the_cli_refuses_an_incomplete_device_action_saying_what_is_missing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], why: str
) -> None:
    store, _engine_, _devices = _engine(tmp_path)
    with store:
        code, _out, err = run_cli(
            capsys, "device-action", *argv, "--db", str(tmp_path / "labctl.db")
        )
        assert code == 2 and why in err and "Traceback" not in err
        assert store.pending_commands() == []
