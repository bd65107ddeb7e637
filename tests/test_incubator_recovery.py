"""SerialIncubator when the controller's memory and the device disagree: a move started again
(a store restored from an older copy, an engine restarted), a device initialising or
power-cycled, a link that went away and came back, and what the adapter reports.

Against the Cytomat and LiCONiC simulators over real transports (a pseudo-terminal behind a
stable path, ``socket://``), virtual time. The simulators' action logs are the ground truth:
nothing may move twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

import pytest

from labctl.clock import VirtualClock
from labctl.devices import OpState, Reports
from labctl.drivers.cytomat import CytomatDriver
from labctl.drivers.incubators import SerialIncubator
from labctl.drivers.liconic import LiconicDriver
from labctl.errors import (
    DeviceBusy,
    DeviceError,
    DeviceFault,
    DeviceInitializing,
    OperationLost,
    PlaceConflict,
)
from labctl.simulators.cytomat import CytomatConfig, CytomatSim
from labctl.simulators.liconic import LiconicSim
from labctl.simulators.serial_link import PtyLink, SocketLink

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
MOVE_S = 15.0


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


def cytomat_sim(clock: VirtualClock, *, require_init: bool = False, **kw: object) -> CytomatSim:
    config = CytomatConfig(slots=10, move_s=MOVE_S, init_s=30.0, require_init=require_init)
    return CytomatSim(clock, config, **kw)  # type: ignore[arg-type]


def cytomat_adapter(clock: VirtualClock, url: str, **kw: object) -> SerialIncubator:
    driver = CytomatDriver("inc-1", url, clock, slots=10, reply_timeout_s=0.3)
    return SerialIncubator("inc-1", driver, clock, **kw)  # type: ignore[arg-type]


@contextmanager
def adapter_on(link: PtyLink | SocketLink, clock: VirtualClock) -> Iterator[SerialIncubator]:
    url = link.port if isinstance(link, PtyLink) else link.url
    inc = cytomat_adapter(clock, url)
    try:
        yield inc
    finally:
        inc.close()


def moves(sim: CytomatSim | LiconicSim) -> list[tuple[str, int | None]]:
    return [(a.action, a.slot) for a in sim.actions]


def after_init(start: Callable[[], str], clock: VirtualClock, init_s: float = 30.0) -> str:
    """``start()`` on a Cytomat that must be initialised first: the first start starts
    ll:in and raises DeviceInitializing (nothing moves); once it is done, it goes through."""
    with pytest.raises(DeviceInitializing):
        start()
    clock.advance(init_s + 1)
    return start()


# --- before a move: where the plate is ------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "message"),
    [
        (
            "fetch",
            "inc-1: mv:st 003: the plate may have been fetched already, so nothing was moved: "
            "transfer station occupied [device code 32]",
        ),
        (
            "store",
            "inc-1: mv:ts 003: the plate may have been stored already, so nothing was moved: "
            "transfer station empty [device code 31]",
        ),
    ],
)
def test_a_move_done_already_is_not_done_again(
    clock: VirtualClock, kind: str, message: str
) -> None:
    sim = cytomat_sim(clock, plates={3: "P1"} if kind == "fetch" else {})
    if kind == "store":
        sim.place_on_transfer_station("P1")
    key = f"d3/P1/{kind}"
    with PtyLink(sim) as link:
        with adapter_on(link, clock) as inc:
            start = inc.start_fetch if kind == "fetch" else inc.start_store
            op = start(key, 3)
            clock.advance(MOVE_S + 1)
            assert inc.poll(op).state is OpState.SUCCEEDED
            assert start(key, 3) == op  # the same job again in this process: done already
        # A new process whose store went back to before the move: the device shows it.
        with adapter_on(link, clock) as restarted:
            with pytest.raises(PlaceConflict) as exc:
                (restarted.start_fetch if kind == "fetch" else restarted.start_store)(key, 3)
    assert str(exc.value) == message
    assert moves(sim) == [("retrieve" if kind == "fetch" else "store", 3)]
    assert (sim.transfer_station, sim.slots) == (
        ("P1", {}) if kind == "fetch" else (None, {3: "P1"})
    )


def test_liconic_store_from_an_empty_transfer_station_is_refused_before_any_access(
    clock: VirtualClock,
) -> None:
    # The PLC itself would accept the import and fail it after the transfer time.
    sim = LiconicSim(clock)
    with PtyLink(sim) as link:
        driver = LiconicDriver("inc-hyp", link.port, clock, levels=[11, 11], reply_timeout_s=0.3)
        inc = SerialIncubator("inc-hyp", driver, clock)
        try:
            with pytest.raises(PlaceConflict) as exc:
                inc.start_store("job-a", 2)
            assert str(exc.value) == (
                "inc-hyp: ST 1904: import to slot 2 (cassette 1, level 2) not started: the "
                "transfer station sensor (RD 1813) shows no plate; the plate may have been "
                "stored already"
            )
        finally:
            inc.close()
    assert sim.actions == ()


# --- initialisation ------------------------------------------------------------------------


def test_a_new_process_does_not_initialise_an_initialised_device(clock: VirtualClock) -> None:
    sim = cytomat_sim(clock, require_init=True, plates={3: "P1", 4: "P2"})
    with PtyLink(sim) as link:
        with adapter_on(link, clock) as first:
            with pytest.raises(DeviceInitializing):
                first.start_fetch("job-a", 3)  # powered on: the device needs ll:in
            clock.advance(31)
            op = first.start_fetch("job-a", 3)
            clock.advance(MOVE_S + 1)
            assert first.poll(op).state is OpState.SUCCEEDED
        sim.take_from_transfer_station()
        for key in ("job-b", "job-c"):  # two more engine starts
            with adapter_on(link, clock) as again:
                op = again.start_fetch(key, 4) if key == "job-b" else again.start_store(key, 4)
                clock.advance(MOVE_S + 1)
                assert again.poll(op).state is OpState.SUCCEEDED
    assert moves(sim) == [("init", None), ("retrieve", 3), ("retrieve", 4), ("store", 4)]


def test_a_device_left_initialising_by_a_dead_engine_makes_starts_wait(
    clock: VirtualClock,
) -> None:
    sim = cytomat_sim(clock, require_init=True, plates={3: "P1"})
    with PtyLink(sim) as link:
        with adapter_on(link, clock) as first:
            with pytest.raises(DeviceInitializing):
                first.start_fetch("job-a", 3)  # ll:in started; then the engine dies
        clock.advance(5)
        with adapter_on(link, clock) as second:
            for _ in range(3):  # every start while it initialises: wait, not "busy"
                with pytest.raises(DeviceInitializing) as exc:
                    second.start_fetch("job-a", 3)
                assert not isinstance(exc.value, DeviceFault)
                assert str(exc.value) == (
                    "inc-1: fetch slot 3: the device is initialising: start again when it is done"
                )
                clock.advance(5)
            assert "initialising" in second.report("job-a")
            clock.advance(20)
            op = second.start_fetch("job-a", 3)
            clock.advance(MOVE_S + 1)
            assert second.poll(op).state is OpState.SUCCEEDED
    assert moves(sim) == [("init", None), ("retrieve", 3)]


def test_a_device_busy_with_a_move_of_a_dead_engine_is_busy_not_initialising(
    clock: VirtualClock,
) -> None:
    sim = cytomat_sim(clock, plates={3: "P1", 4: "P2"})
    with PtyLink(sim) as link:
        with adapter_on(link, clock) as first:
            first.start_fetch("job-a", 3)
        with adapter_on(link, clock) as second:
            with pytest.raises(DeviceBusy) as exc:
                second.start_fetch("job-b", 4)
            assert not isinstance(exc.value, DeviceInitializing)
    clock.advance(MOVE_S + 1)
    assert moves(sim) == [("retrieve", 3)]


def test_liconic_initialising_gives_device_initializing(clock: VirtualClock) -> None:
    # socket://: Linux refuses to open a pty a second time with parity (8E1) set, as a pty
    # has no parity; a real port has.
    sim = LiconicSim(clock, plates={(1, 1): "P1"})
    with SocketLink(sim) as link:
        driver = LiconicDriver("inc-hyp", link.url, clock, levels=[11, 11], reply_timeout_s=0.3)
        driver.connect()
        driver.start_initialize()  # ST 1801 from an engine that then died
        driver.close()
        inc = SerialIncubator(
            "inc-hyp",
            LiconicDriver("inc-hyp", link.url, clock, levels=[11, 11], reply_timeout_s=0.3),
            clock,
        )
        try:
            assert not sim.ready  # ready bit 0 while ST 1801 runs
            with pytest.raises(DeviceInitializing, match="the device is initialising"):
                inc.start_fetch("job-a", 1)
            assert inc.report("job-a") == "inc-hyp: the transfer station is empty; initialising"
            clock.advance(sim.config.init_s + 1)
            op = inc.start_fetch("job-a", 1)
            clock.advance(sim.config.transfer_s + 1)
            assert inc.poll(op).state is OpState.SUCCEEDED
        finally:
            inc.close()
    assert [a.action for a in sim.actions] == ["init", "retrieve"]


def test_initialisation_off_in_the_workcell_is_a_fault_for_a_person(clock: VirtualClock) -> None:
    sim = cytomat_sim(clock, require_init=True, plates={3: "P1"})
    with PtyLink(sim) as link:
        inc = cytomat_adapter(clock, link.port, initialize=False)
        try:
            with pytest.raises(DeviceFault, match="initialize: false") as exc:
                inc.start_fetch("job-a", 3)
            assert not isinstance(exc.value, DeviceInitializing)
        finally:
            inc.close()
    assert sim.actions == () and not sim.busy


# --- lost moves -----------------------------------------------------------------------------


@pytest.mark.parametrize("require_init", [False, True])
def test_a_cytomat_power_cycled_during_a_fetch_lost_it(
    clock: VirtualClock, require_init: bool
) -> None:
    sim = cytomat_sim(clock, require_init=require_init, plates={3: "P1"})
    with PtyLink(sim) as link, adapter_on(link, clock) as inc:

        def fetch() -> str:
            return inc.start_fetch("job-a", 3)

        op = after_init(fetch, clock) if require_init else fetch()
        clock.advance(5)
        sim.power_cycle()
        clock.advance(MOVE_S)
        with pytest.raises(OperationLost) as exc:
            inc.poll(op)
        assert str(exc.value) == (
            "inc-1: fetch slot 3: the device is idle with no error but the transfer station "
            "is empty: the device no longer knows this fetch, and whether the plate moved "
            "cannot be told from it; check the plate"
        )
        with pytest.raises(OperationLost):  # every poll: never "unreachable, ask again"
            inc.poll(op)
        assert inc.find_op("job-a") == op
        assert "was lost by the device" in inc.report("job-a")
        # The operator retries: after a power cycle the device may need initialising first.
        op = after_init(fetch, clock) if require_init else fetch()
        clock.advance(MOVE_S + 1)
        assert inc.poll(op).state is OpState.SUCCEEDED
    expected = [("init", None), ("init", None)] if require_init else []
    assert [m for m in moves(sim) if m[0] == "init"] == expected
    assert [m for m in moves(sim) if m[0] != "init"] == [("retrieve", 3)]
    assert sim.transfer_station == "P1"


def test_a_device_initialising_during_a_move_lost_it(clock: VirtualClock) -> None:
    sim = cytomat_sim(clock, plates={3: "P1"})
    with PtyLink(sim) as link, adapter_on(link, clock) as inc:
        op = inc.start_fetch("job-a", 3)
        clock.advance(5)
        sim.power_cycle()
        sim.handle_line("ll:in")  # it initialises by itself after the power cycle
        with pytest.raises(OperationLost, match="the device is initialising, so it was restarted"):
            inc.poll(op)
    assert sim.slots == {3: "P1"}


def test_a_liconic_power_cycled_during_an_export_lost_it(clock: VirtualClock) -> None:
    sim = LiconicSim(clock, plates={(1, 2): "P7"})
    with PtyLink(sim) as link:
        driver = LiconicDriver("inc-hyp", link.port, clock, levels=[11, 11], reply_timeout_s=0.3)
        inc = SerialIncubator("inc-hyp", driver, clock)
        try:
            with pytest.raises(DeviceInitializing):
                inc.start_fetch("job-a", 2)
            clock.advance(sim.config.init_s + 1)
            op = inc.start_fetch("job-a", 2)
            clock.advance(3)
            sim.power_cycle()  # the session is gone too: the driver opens it again (E1)
            clock.advance(sim.config.transfer_s)
            with pytest.raises(OperationLost, match="^inc-hyp: fetch slot 2: the device is idle"):
                inc.poll(op)
        finally:
            inc.close()
    assert sim.slots == {(1, 2): "P7"} and sim.transfer_station is None


# --- the link goes and comes back -------------------------------------------------------------


def test_a_pty_link_restarted_on_the_same_path_is_reopened(
    clock: VirtualClock, tmp_path: Path
) -> None:
    # The USB adapter is unplugged and plugged in again during a fetch: the device itself
    # carries on, and its by-id name comes back pointing at a new tty.
    sim = cytomat_sim(clock, plates={3: "P1"})
    path = tmp_path / "usb-cytomat-if00"
    link = PtyLink(sim, path=path).start()
    inc = cytomat_adapter(clock, str(path))
    try:
        op = inc.start_fetch("job-a", 3)
        link.stop()
        assert not path.exists()
        with pytest.raises(DeviceError):  # the engine's "unreachable": it polls again
            inc.poll(op)
        link = PtyLink(sim, path=path).start()
        clock.advance(MOVE_S + 1)
        assert inc.poll(op).state is OpState.SUCCEEDED
        assert inc.alarms() == []
    finally:
        inc.close()
        link.stop()
    assert moves(sim) == [("retrieve", 3)]


@pytest.mark.parametrize("power_cycled", [False, True])
def test_a_socket_link_restarted_on_the_same_url_is_reopened(
    clock: VirtualClock, power_cycled: bool
) -> None:
    # The device server goes away during a fetch and comes back on the same URL: with the
    # device as it was (its link restarted), or as a power-cycled device (a new simulator,
    # the plate still in its slot, nothing under way).
    sim = cytomat_sim(clock, plates={3: "P1"})
    link = SocketLink(sim).start()
    port = link.port
    inc = cytomat_adapter(clock, link.url)
    try:
        op = inc.start_fetch("job-a", 3)
        link.stop()
        with pytest.raises(DeviceError):  # the engine's "unreachable": it polls again
            inc.poll(op)
        assert [a.code for a in inc.alarms()] == ["offline"]
        back = cytomat_sim(clock, plates={3: "P1"}) if power_cycled else sim
        link = SocketLink(back, port=port).start()
        clock.advance(MOVE_S + 1)
        # The next call opens the same URL again; nothing else is needed.
        if power_cycled:
            with pytest.raises(OperationLost):
                inc.poll(op)
        else:
            assert inc.poll(op).state is OpState.SUCCEEDED
        assert inc.alarms() == []
    finally:
        inc.close()
        link.stop()
    if power_cycled:
        assert back.actions == () and back.slots == {3: "P1"}
    else:
        assert moves(sim) == [("retrieve", 3)] and sim.transfer_station == "P1"


# --- report ---------------------------------------------------------------------------------


def test_report_says_what_the_incubator_shows_and_knows(clock: VirtualClock) -> None:
    sim = cytomat_sim(clock, plates={3: "P1"})
    link = SocketLink(sim).start()
    inc = cytomat_adapter(clock, link.url)
    try:
        assert isinstance(inc, Reports)
        assert inc.report("job-a") == "inc-1: the transfer station is empty; idle"
        inc.start_fetch("job-a", 3)
        assert inc.report("job-a") == (
            "inc-1: the transfer station is empty; busy with a move; its fetch slot 3 is under way"
        )
        clock.advance(MOVE_S + 1)
        inc.poll("inc-1:job-a")
        assert inc.report("job-a") == (
            "inc-1: the transfer station holds a plate; idle; its fetch slot 3 succeeded "
            "(plate from slot 3 is on the transfer station)"
        )
        assert inc.report("job-b") == "inc-1: the transfer station holds a plate; idle"
        link.stop()
        offline = inc.report("job-a")
        assert offline.startswith("inc-1: it could not be asked (")
        assert offline.endswith(
            "; its fetch slot 3 succeeded (plate from slot 3 is on the transfer station)"
        )
    finally:
        inc.close()
        link.stop()
