"""OpentronsLiquidHandler when the controller's memory and the robot's disagree: a job started
again (a store restored from an older copy, an engine restarted), a robot that restarted and
forgot its runs, and what the handler reports of a job. Against the robot-server simulator
over HTTP on 127.0.0.1, virtual time; the simulator's action log is the ground truth."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import datetime, timezone

import pytest

from labctl.clock import VirtualClock
from labctl.devices import OpState, Reports
from labctl.drivers.opentrons_lh import protocol_filename
from labctl.drivers.opentrons_protocol import generate
from labctl.errors import DeviceFault, OperationLost
from labctl.simulators.opentrons_analysis import warm_up
from labctl.simulators.opentrons_robot import RobotSimulator
from tests.test_opentrons_lh import FEED, KEY, Rig


@pytest.fixture(scope="module", autouse=True)
def _analysis_ready() -> None:
    warm_up()  # the simulator's analysis processes import opentrons once (~2 s)


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))


@pytest.fixture
def rig(clock: VirtualClock) -> Iterator[Rig]:
    with RobotSimulator(clock, robot="OT-2") as sim:
        yield Rig(sim, clock, "OT-2")


def runs_created(sim: RobotSimulator) -> list[str]:
    return [e["runId"] for e in sim.action_entries() if e["event"] == "run_created"]


def test_a_job_started_twice_gives_one_run(rig: Rig) -> None:
    op_id = rig.lh.start_job(KEY, dict(FEED))
    assert rig.lh.start_job(KEY, dict(FEED)) == op_id  # under way: answered with it
    assert rig.run_to_end(op_id).state is OpState.SUCCEEDED
    # A new process (the engine restarted, or its store went back to before the job was
    # done): the robot's succeeded run is the answer; nothing is uploaded or run again.
    restarted = rig.handler()
    assert restarted.start_job(KEY, dict(FEED)) == op_id
    assert restarted.start_job(KEY, {**FEED, "attempt": 0}) == op_id
    assert runs_created(rig.sim) == [op_id]
    assert len(rig.uploads.sent) == 1
    assert {e["runId"] for e in rig.sim.action_entries() if e["event"] == "command"} == {op_id}
    assert restarted.poll(op_id).state is OpState.SUCCEEDED


def test_after_a_failed_run_a_new_one_only_when_the_operator_retries(rig: Rig) -> None:
    rig.sim.set_faults(fail_at_command=3)
    failed = rig.lh.start_job(KEY, dict(FEED))
    assert rig.run_to_end(failed).state is OpState.FAILED
    rig.sim.set_faults(fail_at_command=None)
    # Another process, told nothing of a retry: that run may have moved liquid.
    restarted = rig.handler()
    with pytest.raises(DeviceFault) as exc:
        restarted.start_job(KEY, dict(FEED))
    assert str(exc.value).startswith(
        f"ot2-a: start {KEY}: a previous run of this job (run {failed[:8]}) failed on the robot "
        "and may have moved liquid, so it is not started again: check the plate;"
    )
    with pytest.raises(DeviceFault):
        restarted.start_job(KEY, {**FEED, "attempt": 0})
    assert runs_created(rig.sim) == [failed]
    # The operator chose to retry: one new run, and only one.
    second = restarted.start_job(KEY, {**FEED, "attempt": 1})
    assert second != failed
    assert restarted.start_job(KEY, {**FEED, "attempt": 1}) == second
    assert rig.run_to_end(second).state is OpState.SUCCEEDED
    assert runs_created(rig.sim) == [failed, second]


def test_a_retry_that_failed_again_is_not_repeated_on_the_same_attempt(rig: Rig) -> None:
    rig.sim.set_faults(fail_at_command=3)
    first = rig.lh.start_job(KEY, dict(FEED))
    rig.run_to_end(first)
    second = rig.lh.start_job(KEY, {**FEED, "attempt": 1})
    assert rig.run_to_end(second).state is OpState.FAILED
    rig.sim.set_faults(fail_at_command=None)
    # A store gone back to "attempt 1" would run it a third time: refused.
    with pytest.raises(DeviceFault, match=r"\(2 runs of it ended so\)"):
        rig.handler().start_job(KEY, {**FEED, "attempt": 1})
    third = rig.handler().start_job(KEY, {**FEED, "attempt": 2})
    assert runs_created(rig.sim) == [first, second, third]


def test_an_engine_that_passes_no_attempt_retries_what_this_handler_saw_fail(rig: Rig) -> None:
    # The engine polled the run to FAILED and the operator answered 'retry': starting the
    # job again (without 'attempt') makes a new run.
    rig.sim.set_faults(fail_at_command=3)
    failed = rig.lh.start_job(KEY, dict(FEED))
    assert rig.run_to_end(failed).state is OpState.FAILED
    rig.sim.set_faults(fail_at_command=None)
    again = rig.lh.start_job(KEY, dict(FEED))
    assert again != failed
    assert rig.run_to_end(again).state is OpState.SUCCEEDED


def test_a_run_the_robot_stopped_before_it_was_played_does_not_count(rig: Rig) -> None:
    # A crash left an idle run of the job; another job's run took the robot since, which
    # stopped the idle one (robot-server does so). It did nothing: the job runs as new.
    source = generate(FEED, rig.layout, "OT-2").encode()
    uploaded = rig.client.upload_protocol(protocol_filename(KEY), source)
    rig.client.wait_for_analysis(uploaded.protocol_id, uploaded.analysis_id)
    idle = rig.client.create_run(uploaded.protocol_id, {"first_tip": 0})
    other = rig.lh.start_job(KEY.replace("P2", "P3"), {**FEED, "plate": "P3"})
    assert rig.client.run_status(idle).status == "stopped"
    assert rig.run_to_end(other).state is OpState.SUCCEEDED
    assert rig.handler().find_op(KEY) is None
    op_id = rig.handler().start_job(KEY, dict(FEED))
    assert op_id not in (idle, other)
    assert rig.run_to_end(op_id).state is OpState.SUCCEEDED
    assert runs_created(rig.sim) == [idle, other, op_id]


def test_a_robot_that_restarted_and_lost_the_run_raises_operation_lost(rig: Rig) -> None:
    op_id = rig.lh.start_job(KEY, dict(FEED))
    assert rig.lh.poll(op_id).state is OpState.RUNNING
    port = rig.sim.port
    rig.sim.stop()
    # The robot comes back on the same address knowing nothing of its runs.
    with RobotSimulator(rig.clock, robot="OT-2").start(port=port) as fresh:
        with pytest.raises(OperationLost) as exc:
            rig.lh.poll(op_id)
        assert str(exc.value).startswith(
            f"ot2-a: run {op_id}: the robot no longer knows this run (it was restarted or reset)"
        )
        assert exc.value.device_code == "4000"
        with pytest.raises(OperationLost):  # and again: it is not "unreachable, ask again"
            rig.lh.poll(op_id)
        assert rig.lh.alarms() == []
        assert rig.lh.find_op(KEY) is None
        assert rig.lh.report(KEY) == "ot2-a: no run of this job on the robot"
        rig.lh.abort(op_id)  # nothing on the robot to stop: no error
        assert runs_created(fresh) == []


def test_report_says_what_the_robot_knows_of_the_job(rig: Rig) -> None:
    assert isinstance(rig.lh, Reports)
    assert rig.lh.report(KEY) == "ot2-a: no run of this job on the robot"
    rig.sim.set_faults(fail_at_command=3)
    failed = rig.lh.start_job(KEY, dict(FEED))
    rig.clock.sleep(1)
    report = rig.lh.report(KEY)
    assert report.startswith(f"ot2-a: run {failed[:8]} is running: ") and "commands" in report
    rig.run_to_end(failed)
    done = rig.client.run_status(failed).commands_done
    assert rig.lh.report(KEY) == (
        f"ot2-a: run {failed[:8]} failed after {done} of "
        f"{rig.client.run_status(failed).commands_total} commands"
    )
    rig.sim.set_faults(fail_at_command=None)
    second = rig.lh.start_job(KEY, {**FEED, "attempt": 1})
    rig.run_to_end(second)
    report = rig.lh.report(KEY)
    assert report.startswith(f"ot2-a: run {second[:8]} succeeded (")
    assert f"; run {failed[:8]} failed after" in report
    rig.sim.set_faults(offline=True)
    offline = rig.lh.report(KEY)
    assert offline.startswith("ot2-a: the robot could not be asked (robot offline")
