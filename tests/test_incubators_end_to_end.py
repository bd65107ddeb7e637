"""Each incubator driver against its independently written simulator, over a real pty.

The driver and the simulator were written from DEVICES.md by different people who did not
read each other's code; agreement here checks both against one reading of the wire spec.
"""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from labctl.clock import VirtualClock
from labctl.drivers.cytomat import CytomatDriver
from labctl.drivers.liconic import LiconicDriver
from labctl.errors import DeviceError
from labctl.simulators.cytomat import CytomatConfig, CytomatSim
from labctl.simulators.liconic import LiconicSim
from labctl.simulators.serial_link import PtyLink


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))


def test_cytomat_fetch_and_store_round_trip(clock: VirtualClock, tmp_path) -> None:
    log = tmp_path / "actions.jsonl"
    sim = CytomatSim(
        clock, CytomatConfig(slots=10, move_s=15.0, init_s=30.0), plates={3: "P1"}, action_log=log
    )
    with PtyLink(sim) as link:
        drv = CytomatDriver("inc-1", link.port, clock, slots=10, poll_interval_s=0.5)
        drv.connect()
        try:
            drv.initialize()
            t0 = clock.now()
            drv.start_fetch(3)
            drv.wait_idle()
            assert (clock.now() - t0).total_seconds() >= 15.0
            assert sim.transfer_station == "P1"
            assert drv.poll().transfer_station_occupied
            drv.start_store(3)
            drv.wait_idle()
            assert sim.transfer_station is None
            climate = drv.read_climate()
            assert climate.temperature_c is not None and 30 < climate.temperature_c < 40
        finally:
            drv.close()
    actions = [a for a in log.read_text().splitlines() if a]
    assert [__import__("json").loads(a)["action"] for a in actions] == ["init", "retrieve", "store"]


def test_cytomat_fetch_from_empty_slot_is_a_device_fault(clock: VirtualClock) -> None:
    sim = CytomatSim(clock, CytomatConfig(slots=10, require_init=False), plates={})
    with PtyLink(sim) as link:
        drv = CytomatDriver("inc-1", link.port, clock, slots=10)
        drv.connect()
        try:
            drv.start_fetch(4)
            with pytest.raises(DeviceError) as exc:
                drv.wait_idle()
            assert "inc-1" in str(exc.value)
            assert exc.value.device_code is not None
        finally:
            drv.close()


def test_liconic_export_and_import_round_trip(clock: VirtualClock, tmp_path) -> None:
    sim = LiconicSim(clock, plates={(1, 2): "P7"}, action_log=tmp_path / "l.jsonl")
    levels = [sim.config.levels] * sim.config.cassettes
    with PtyLink(sim) as link:
        drv = LiconicDriver("inc-hyp", link.port, clock, levels=levels)
        drv.connect()
        try:
            drv.initialize()
            slot = drv.slot_of(1, 2)
            drv.start_fetch(slot)
            drv.wait_idle()
            assert sim.transfer_station == "P7"
            drv.start_store(slot)
            drv.wait_idle()
            assert sim.transfer_station is None
        finally:
            drv.close()
