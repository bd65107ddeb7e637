"""SerialIncubator over a real pty against the Cytomat and LiCONiC simulators, and
ManualIncubator with a scripted operator.

Time is virtual: the test advances the clock between polls, as the engine's loop would
wait between them. The simulators' state (plates, action log) is the ground truth.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta, timezone
from typing import Any

import pytest

from labctl.clock import VirtualClock
from labctl.devices import DeviceAlarm, Incubator, NotKnown, OpState, OpStatus
from labctl.drivers.cytomat import CytomatDriver
from labctl.drivers.incubators import SerialIncubator
from labctl.drivers.liconic import LiconicDriver
from labctl.drivers.manual import ManualIncubator
from labctl.errors import (
    DeviceError,
    DeviceFault,
    DeviceInitializing,
    DeviceNeedsOperator,
    DeviceTimeout,
)
from labctl.simulators.cytomat import CytomatConfig, CytomatSim
from labctl.simulators.faults import ClimateConfig, Fault, FaultKind
from labctl.simulators.liconic import LiconicSim
from labctl.simulators.serial_link import PtyLink

T0 = datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)
SETPOINTS = {"temperature": 37.0, "co2": 5.0}


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(T0)


@contextmanager
def cytomat(
    clock: VirtualClock, sim: CytomatSim, *, initialize: bool = True, **driver_kw: Any
) -> Iterator[SerialIncubator]:
    with PtyLink(sim) as link:
        driver = CytomatDriver(
            "inc-1", link.port, clock, slots=sim.config.slots, reply_timeout_s=0.3, **driver_kw
        )
        inc = SerialIncubator("inc-1", driver, clock, setpoints=SETPOINTS, initialize=initialize)
        try:
            yield inc
        finally:
            inc.close()
        assert link.failures == []


@contextmanager
def liconic(clock: VirtualClock, sim: LiconicSim) -> Iterator[SerialIncubator]:
    levels = [sim.config.levels] * sim.config.cassettes
    with PtyLink(sim) as link:
        driver = LiconicDriver("inc-hyp", link.port, clock, levels=levels, reply_timeout_s=0.3)
        inc = SerialIncubator("inc-hyp", driver, clock, setpoints=SETPOINTS)
        try:
            yield inc
        finally:
            inc.close()
        assert link.failures == []


def after_init(start: Callable[[], str], clock: VirtualClock, init_s: float) -> str:
    """``start()`` on a device powered on but not initialised: the first start starts its
    initialisation and raises DeviceInitializing (nothing moves); once that is done, the
    start goes through."""
    with pytest.raises(DeviceInitializing):
        start()
    clock.advance(init_s + 1)
    return start()


# --- Cytomat ---------------------------------------------------------------------------


def test_cytomat_fetch_and_store_round_trip(clock: VirtualClock) -> None:
    sim = CytomatSim(clock, CytomatConfig(slots=10, move_s=15.0, init_s=30.0), plates={3: "P1"})
    with cytomat(clock, sim) as inc:
        assert isinstance(inc, Incubator)
        # Powered on, not initialised: the device refuses the move (er 11), the adapter
        # starts ll:in without waiting, and the start says to wait.
        with pytest.raises(DeviceInitializing) as exc:
            inc.start_fetch("d3-feed/P1/0", 3)
        assert exc.value.device_code == "11" and "nothing moved" in exc.value.detail
        assert clock.now() == T0  # nothing blocked
        clock.advance(10)
        with pytest.raises(DeviceInitializing, match="the device is initialising"):
            inc.start_fetch("d3-feed/P1/0", 3)  # still initialising: not initialised twice
        clock.advance(21)
        op = inc.start_fetch("d3-feed/P1/0", 3)
        assert op == "inc-1:d3-feed/P1/0"
        assert inc.poll(op).state is OpState.RUNNING
        assert sim.transfer_station is None
        clock.advance(16)
        done = inc.poll(op)
        assert done.state is OpState.SUCCEEDED
        assert done.result == {"slot": 3, "transfer_station_occupied": True}
        assert sim.transfer_station == "P1"
        assert inc.poll(op) == done  # a finished op answers the same without asking again
        assert inc.find_op("d3-feed/P1/0") == op

        op2 = inc.start_store("d3-feed/P1/4", 3)
        assert inc.poll(op2).state is OpState.RUNNING
        clock.advance(16)
        assert inc.poll(op2).state is OpState.SUCCEEDED
        assert sim.slots == {3: "P1"} and sim.transfer_station is None
        assert inc.alarms() == []
        climate = inc.climate()
        assert climate.temperature_c == pytest.approx(37.0, abs=0.5)
        assert climate.co2_pct == pytest.approx(5.0, abs=0.5)
    assert [(a.action, a.slot) for a in sim.actions] == [
        ("init", None),
        ("retrieve", 3),
        ("store", 3),
    ]


def test_cytomat_second_move_while_busy_is_refused_and_same_start_is_not_repeated(
    clock: VirtualClock,
) -> None:
    sim = CytomatSim(clock, CytomatConfig(slots=10, require_init=False), plates={3: "P1", 4: "P2"})
    with cytomat(clock, sim, initialize=False) as inc:
        op = inc.start_fetch("job-a", 3)
        assert inc.start_fetch("job-a", 3) == op  # same job again: no second move
        with pytest.raises(DeviceError) as exc:
            inc.start_fetch("job-b", 4)
        assert "job-a" in str(exc.value)
        clock.advance(16)
        assert inc.poll(op).state is OpState.SUCCEEDED
    assert [a.action for a in sim.actions] == ["retrieve"]


def test_cytomat_fetch_from_empty_slot_fails_with_the_device_code(clock: VirtualClock) -> None:
    sim = CytomatSim(clock, CytomatConfig(slots=10, require_init=False), plates={})
    with cytomat(clock, sim, initialize=False) as inc:
        op = inc.start_fetch("job-a", 4)
        clock.advance(16)
        st = inc.poll(op)
        assert st.state is OpState.FAILED
        assert isinstance(st.error, DeviceFault)
        assert st.error.device_code == sim.config.slot_empty_code == "02"
        assert "inc-1" in str(st.error)
        assert inc.poll(op) == st
        # The driver cleared the error register: the device takes the next move.
        sim.place_on_transfer_station("P9")
        op2 = inc.start_store("job-b", 4)
        clock.advance(16)
        assert inc.poll(op2).state is OpState.SUCCEEDED
    assert sim.slots == {4: "P9"}


def test_cytomat_door_open_needs_the_operator_then_fails(clock: VirtualClock) -> None:
    door = Fault(FaultKind.DOOR_OPEN, at=T0, duration_s=120)
    sim = CytomatSim(
        clock, CytomatConfig(slots=10, require_init=False), plates={3: "P1"}, faults=[door]
    )
    with cytomat(clock, sim, initialize=False) as inc:
        assert (
            DeviceAlarm("inc-1", "door", "inc-1: the device door is open: close it") in inc.alarms()
        )
        op = inc.start_fetch("job-a", 3)
        st = inc.poll(op)
        assert st.state is OpState.NEEDS_OPERATOR
        assert isinstance(st.error, DeviceNeedsOperator)
        assert st.error.device_code == sim.config.door_open_code
        clock.advance(60)
        assert inc.poll(op).state is OpState.NEEDS_OPERATOR  # door still open
        clock.advance(61)  # the door is closed now; the move never happened
        st = inc.poll(op)
        assert st.state is OpState.FAILED
        assert st.error is not None and st.error.device_code == sim.config.door_open_code
        assert [a.code for a in inc.alarms()] == []
    assert sim.slots == {3: "P1"} and sim.actions == ()


def test_cytomat_door_opened_during_a_move_pauses_then_the_move_completes(
    clock: VirtualClock,
) -> None:
    door = Fault(FaultKind.DOOR_OPEN, at=T0 + timedelta(seconds=5), duration_s=60)
    sim = CytomatSim(
        clock, CytomatConfig(slots=10, require_init=False), plates={3: "P1"}, faults=[door]
    )
    with cytomat(clock, sim, initialize=False) as inc:
        op = inc.start_fetch("job-a", 3)
        clock.advance(20)  # the move has ended, the door is still open
        st = inc.poll(op)
        assert st.state is OpState.NEEDS_OPERATOR
        assert isinstance(st.error, DeviceNeedsOperator) and st.error.device_code is None
        assert [a.code for a in inc.alarms()] == ["door"]
        clock.advance(60)
        assert inc.poll(op).state is OpState.SUCCEEDED
        assert inc.alarms() == []
    assert sim.transfer_station == "P1"


def test_cytomat_co2_out_of_range_raises_a_climate_alarm(clock: VirtualClock) -> None:
    drift = Fault(FaultKind.CO2_OUT_OF_RANGE, at=T0 + timedelta(minutes=10), co2_offset=3.0)
    sim = CytomatSim(clock, CytomatConfig(slots=10, require_init=False), faults=[drift])
    with cytomat(clock, sim, initialize=False) as inc:
        assert inc.alarms() == []
        clock.advance(3600)
        alarms = inc.alarms()
        assert [a.code for a in alarms] == ["climate"]
        assert "CO2" in alarms[0].message and "setpoint 5 %" in alarms[0].message
        assert "temperature" not in alarms[0].message


def test_cytomat_setpoint_is_written_and_o2_is_refused(clock: VirtualClock) -> None:
    sim = CytomatSim(clock, CytomatConfig(slots=10, require_init=False))
    with cytomat(clock, sim, initialize=False) as inc:
        op = inc.start_setpoint("sp-1", 36.5, 7.0, None)
        st = inc.poll(op)
        assert st.state is OpState.SUCCEEDED
        assert st.result == {"temperature_c": 36.5, "co2_pct": 7.0, "o2_pct": None}
        assert inc.setpoints == {"temperature": 36.5, "co2": 7.0}
        assert inc.driver.read_climate_setpoints().co2_pct == 7.0  # type: ignore[attr-defined]
        # Right after the change the chamber is still at 5 %: no alarm while it settles.
        assert inc.alarms() == []

        op = inc.start_setpoint("sp-2", 37.0, 5.0, 4.0)
        st = inc.poll(op)
        assert st.state is OpState.FAILED
        assert isinstance(st.error, DeviceFault)
        assert "cannot set O2 to 4 %" in st.error.detail
    # Nothing was written for the refused setpoint.
    assert inc.setpoints == {"temperature": 36.5, "co2": 7.0}


def test_no_reply_is_raised_while_polling_then_fails_after_the_move_timeout(
    clock: VirtualClock,
) -> None:
    silent = Fault(FaultKind.NO_REPLY, at=T0 + timedelta(seconds=5), duration_s=3600)
    sim = CytomatSim(
        clock, CytomatConfig(slots=10, require_init=False), plates={3: "P1"}, faults=[silent]
    )
    with cytomat(clock, sim, initialize=False, move_timeout_s=60.0) as inc:
        op = inc.start_fetch("job-a", 3)
        clock.advance(10)
        with pytest.raises(DeviceTimeout):
            inc.poll(op)
        alarms = inc.alarms()
        assert [a.code for a in alarms] == ["offline"]
        assert "inc-1" in alarms[0].message
        clock.advance(61)
        st = inc.poll(op)
        assert st.state is OpState.FAILED
        assert isinstance(st.error, DeviceTimeout)
        assert "whether it completed is unknown" in st.error.detail


def test_a_new_adapter_cannot_tell_what_happened_before_the_restart(clock: VirtualClock) -> None:
    sim = CytomatSim(clock, CytomatConfig(slots=10, require_init=False), plates={3: "P1"})
    with PtyLink(sim) as link:
        first = SerialIncubator(
            "inc-1", CytomatDriver("inc-1", link.port, clock, slots=10), clock, initialize=False
        )
        op = first.start_fetch("job-a", 3)
        first.close()  # the engine process dies here

        second = SerialIncubator(
            "inc-1", CytomatDriver("inc-1", link.port, clock, slots=10), clock, initialize=False
        )
        try:
            with pytest.raises(NotKnown) as exc:
                second.find_op("job-a")
            assert "transfer station is empty" in str(exc.value)
            assert "busy" in str(exc.value)
            # Polling the recorded op id: busy while the device still moves...
            assert second.poll(op).state is OpState.RUNNING
            clock.advance(16)
            # ...then it cannot confirm the move was ours: the operator decides.
            st = second.poll(op)
            assert st.state is OpState.FAILED
            assert isinstance(st.error, DeviceNeedsOperator)
            with pytest.raises(NotKnown) as exc:
                second.find_op("job-a")
            assert "transfer station is occupied" in str(exc.value)
        finally:
            second.close()
    assert sim.transfer_station == "P1"


def test_an_error_left_from_before_the_restart_is_reported_and_cleared(
    clock: VirtualClock,
) -> None:
    sim = CytomatSim(clock, CytomatConfig(slots=10, require_init=False), plates={3: "P1"})
    with PtyLink(sim) as link:

        def adapter() -> SerialIncubator:
            driver = CytomatDriver("inc-1", link.port, clock, slots=10)
            return SerialIncubator("inc-1", driver, clock, initialize=False)

        first = adapter()
        lost = first.start_fetch("job-a", 7)  # slot 7 is empty: the move will fail
        first.close()  # the engine process dies here
        clock.advance(16)
        second = adapter()
        # The engine polls the op id it recorded: the latched error is read and cleared.
        st = second.poll(lost)
        assert st.state is OpState.FAILED
        assert isinstance(st.error, DeviceNeedsOperator)
        assert st.error.device_code == "02"
        second.start_fetch("job-b", 8)  # empty too, and nobody polls it
        second.close()
        clock.advance(16)

        third = adapter()
        try:
            # A new move is refused while an old error is latched, which clears it...
            with pytest.raises(DeviceFault) as exc:
                third.start_fetch("job-c", 3)
            assert exc.value.device_code == "02"
            assert "earlier operation" in exc.value.detail
            # ...so the retry goes through.
            op = third.start_fetch("job-c", 3)
            clock.advance(16)
            assert third.poll(op).state is OpState.SUCCEEDED
        finally:
            third.close()
    assert sim.transfer_station == "P1"
    assert [a.action for a in sim.actions] == ["retrieve"]


# --- LiCONiC ---------------------------------------------------------------------------


def test_liconic_fetch_and_store_round_trip(clock: VirtualClock) -> None:
    sim = LiconicSim(clock, plates={(2, 3): "P7"})
    with liconic(clock, sim) as inc:
        slot = sim.config.levels + 3  # cassette 2, level 3
        # Not initialised: the PLC refuses the export (DM200 00014); ST 1801 is started.
        op = after_init(lambda: inc.start_fetch("job-a", slot), clock, sim.config.init_s)
        clock.advance(sim.config.transfer_s + 1)
        st = inc.poll(op)
        assert st.state is OpState.SUCCEEDED, st
        assert sim.transfer_station == "P7"
        op = inc.start_store("job-b", slot)
        assert inc.poll(op).state is OpState.RUNNING
        clock.advance(sim.config.transfer_s + 1)
        assert inc.poll(op).state is OpState.SUCCEEDED
        assert inc.alarms() == []
    assert [(a.action, a.cassette, a.level) for a in sim.actions] == [
        ("init", None, None),
        ("retrieve", 2, 3),
        ("store", 2, 3),
    ]


def test_liconic_export_from_empty_slot_fails_with_dm200(clock: VirtualClock) -> None:
    sim = LiconicSim(clock)
    with liconic(clock, sim) as inc:
        op = after_init(lambda: inc.start_fetch("job-a", 5), clock, sim.config.init_s)
        clock.advance(sim.config.transfer_s + 1)
        st = inc.poll(op)
        assert st.state is OpState.FAILED
        assert isinstance(st.error, DeviceFault)
        assert st.error.device_code == f"{sim.config.export_source_empty_code:05d}" == "00016"


def test_liconic_import_step_error_is_a_fault_not_the_gate(clock: VirtualClock) -> None:
    """00107 (import: the shovel could not reach the stacker's front position, here an
    occupied slot) is a step code: its last two digits are not the gate cause 7."""
    sim = LiconicSim(clock, plates={(1, 1): "P1", (1, 2): "P2"})
    with liconic(clock, sim) as inc:
        after_init(lambda: inc.start_fetch("job-a", 1), clock, sim.config.init_s)
        clock.advance(sim.config.transfer_s + 1)
        assert inc.poll("inc-hyp:job-a").state is OpState.SUCCEEDED
        op = inc.start_store("job-b", 2)
        clock.advance(sim.config.transfer_s + 1)
        st = inc.poll(op)
        assert st.state is OpState.FAILED
        assert type(st.error) is DeviceFault and st.error.device_code == "00107"
    assert sim.transfer_station == "P1"


def test_liconic_gate_error_fails_as_needing_the_operator(clock: VirtualClock) -> None:
    gate = Fault(FaultKind.DOOR_OPEN, at=T0 + timedelta(minutes=5), duration_s=600)
    sim = LiconicSim(clock, plates={(1, 1): "P1"}, faults=[gate])
    with liconic(clock, sim) as inc:
        after_init(lambda: inc.start_fetch("warm-up", 1), clock, sim.config.init_s)
        clock.advance(sim.config.transfer_s + 1)
        assert inc.poll("inc-hyp:warm-up").state is OpState.SUCCEEDED
        op = inc.start_store("job-a", 1)
        clock.advance(5 * 60)
        assert inc.poll(op).state is OpState.SUCCEEDED
        op = inc.start_fetch("job-b", 1)
        clock.advance(sim.config.transfer_s + 1)
        st = inc.poll(op)
        assert st.state is OpState.FAILED
        assert isinstance(st.error, DeviceNeedsOperator)
        assert st.error.device_code == "00007"
    assert sim.slots == {(1, 1): "P1"}


def test_liconic_co2_out_of_range_alarm(clock: VirtualClock) -> None:
    drift = Fault(FaultKind.CO2_OUT_OF_RANGE, at=T0, co2_offset=-2.5)
    sim = LiconicSim(clock, faults=[drift])
    with liconic(clock, sim) as inc:
        clock.advance(3600)
        alarms = inc.alarms()
        assert [a.code for a in alarms] == ["climate"]
        assert alarms[0].message == "inc-hyp: climate out of range: CO2 2.5 % (setpoint 5 % +- 1)"


def test_o2_setpoint_declared_in_the_workcell_is_held_without_writing(clock: VirtualClock) -> None:
    sim = LiconicSim(clock)
    with PtyLink(sim) as link:
        driver = LiconicDriver("inc-hyp", link.port, clock, levels=[11, 11])
        inc = SerialIncubator(
            "inc-hyp", driver, clock, setpoints={"temperature": 37, "co2": 5, "o2": 4}
        )
        try:
            st = inc.poll(inc.start_setpoint("sp", 37.0, 5.0, 4.0))
            assert st.state is OpState.SUCCEEDED
            st = inc.poll(inc.start_setpoint("sp2", 37.0, 5.0, 2.0))
            assert st.state is OpState.FAILED and "O2" in st.detail
        finally:
            inc.close()


def test_climate_alarm_covers_o2_when_the_device_reports_it(clock: VirtualClock) -> None:
    sim = CytomatSim(
        clock,
        CytomatConfig(slots=10, require_init=False, climate=ClimateConfig(o2=7.0)),
    )
    with PtyLink(sim) as link:
        driver = CytomatDriver("inc-1", link.port, clock, slots=10)
        inc = SerialIncubator(
            "inc-1", driver, clock, setpoints={"temperature": 37, "co2": 5, "o2": 4}
        )
        try:
            alarms = inc.alarms()
            assert [a.code for a in alarms] == ["climate"]
            assert "O2 7 %" in alarms[0].message
        finally:
            inc.close()


# --- ManualIncubator ---------------------------------------------------------------------


class ScriptedOperator:
    """An Operator whose prompts the test answers."""

    def __init__(self) -> None:
        self.name = "operator"
        self.prompts: dict[str, dict[str, Any]] = {}
        self.answers: dict[str, dict[str, Any]] = {}

    def ask(self, job_key: str, prompt: dict[str, Any]) -> str:
        op = f"p{len(self.prompts) + 1}"
        self.prompts[op] = {"job_key": job_key, **prompt}
        return op

    def poll(self, op_id: str) -> OpStatus:
        if op_id not in self.prompts:
            raise DeviceError(self.name, op_id, "no such prompt")
        if op_id in self.answers:
            return OpStatus(OpState.SUCCEEDED, "answered", result=self.answers[op_id])
        return OpStatus(OpState.RUNNING, "waiting")

    def find_op(self, job_key: str) -> str | None:
        return next((k for k, p in self.prompts.items() if p["job_key"] == job_key), None)

    def alarms(self) -> list[DeviceAlarm]:
        return []


def test_manual_incubator_turns_moves_into_prompts() -> None:
    op = ScriptedOperator()
    inc = ManualIncubator("inc-2", op, job_context=lambda key: {"run_id": 7, "job_id": 70})
    assert isinstance(inc, Incubator)
    fetch = inc.start_fetch("d1/P1/0", 3)
    assert fetch == "inc-2/fetch/p1"
    prompt = op.prompts["p1"]
    assert "inc-2" in prompt["text"] and "slot 3" in prompt["text"]
    assert prompt["run_id"] == 7 and prompt["job_id"] == 70 and prompt["slot"] == 3
    assert prompt["choices"] == ["done", "problem"]
    assert inc.poll(fetch).state is OpState.RUNNING
    op.answers["p1"] = {"done": True}
    st = inc.poll(fetch)
    assert st.state is OpState.SUCCEEDED and st.result == {"done": True}
    assert inc.find_op("d1/P1/0") == "inc-2/any/p1"
    assert inc.poll("inc-2/any/p1").state is OpState.SUCCEEDED

    store = inc.start_store("d1/P1/4", 3)
    op.answers["p2"] = {"choice": "problem", "note": "slot 3 is taken"}
    st = inc.poll(store)
    assert st.state is OpState.FAILED
    assert isinstance(st.error, DeviceFault)
    assert st.error.detail == "the operator reported a problem: slot 3 is taken"

    sp = inc.start_setpoint("d2/sp", 37.0, 5.0, 4.0)
    assert "37 degC, CO2 5 %, O2 4 %" in op.prompts["p3"]["text"]
    op.answers["p3"] = {"done": True}
    assert inc.poll(sp).state is OpState.SUCCEEDED
    assert inc.climate().temperature_c is None and inc.alarms() == []
    assert inc.find_op("never-asked") is None
    with pytest.raises(DeviceError):
        inc.poll("other-device/fetch/p1")


def test_manual_incubator_reports_the_operators_prompt() -> None:
    op = ScriptedOperator()
    inc = ManualIncubator("inc-2", op)
    head = "inc-2: a manual incubator, no sensors"
    assert inc.report("d1/P1/0") == f"{head}; the operator was not asked about this job"
    inc.start_fetch("d1/P1/0", 3)
    assert (
        inc.report("d1/P1/0") == f"{head}; the operator was asked about this job (not answered yet)"
    )
    op.answers["p1"] = {"done": True}
    assert inc.report("d1/P1/0") == f"{head}; the operator was asked about this job (answered)"


def test_cytomat_gate_opens_and_closes_on_command(clock: VirtualClock) -> None:
    """A supervisor's manual action (labctl.engine.manual): ``ll:gp 002`` / ``001``, done
    when the gate bit of the overview register says so."""
    sim = CytomatSim(clock, CytomatConfig(slots=10, move_s=15.0, init_s=30.0), plates={3: "P1"})
    with cytomat(clock, sim) as inc:
        op = inc.start_gate("manual/1", True)  # a low-level command: no initialisation needed
        assert inc.poll(op).state is OpState.RUNNING
        assert inc.device_status().gate_open is False  # not yet: the gate takes gate_s
        clock.advance(sim.config.gate_s + 1)
        done = inc.poll(op)
        assert done.state is OpState.SUCCEEDED and done.detail == "the gate is open"
        assert inc.device_status().gate_open is True
        # Starting the same op again does not send it again; a close is a new op.
        assert inc.start_gate("manual/1", True) == op
        shut = inc.start_gate("manual/2", False)
        clock.advance(sim.config.gate_s + 1)
        assert inc.poll(shut).state is OpState.SUCCEEDED
        assert inc.device_status().gate_open is False
        # The plates did not move.
        assert sim.slots == {3: "P1"} and sim.transfer_station is None


def test_liconic_refuses_a_gate_command_it_has_no_documented_telegram_for(
    clock: VirtualClock,
) -> None:
    sim = LiconicSim(clock)
    with liconic(clock, sim) as inc:
        with pytest.raises(DeviceError, match="no documented gate command") as exc:
            inc.start_gate("manual/1", True)
        assert exc.value.command == "ST 1901"
    assert list(sim.actions) == []  # nothing was sent that moves anything
