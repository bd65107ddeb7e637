"""The run engine with in-memory fake devices, on a virtual clock."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from labctl.clock import VirtualClock
from labctl.devices import DeviceAlarm, OpState, OpStatus
from labctl.engine import Engine, EngineConfig, register_run
from labctl.engine.machines import JobState, RunState
from labctl.jobs import WorkcellRoles
from labctl.plan.resolve import resolve
from labctl.store import Store
from labctl.validate import load_protocol, load_text
from tests.fakes import FakeLiquidHandler, FakeOperator, Killer, fake_workcell
from tests.helpers import protocol_text

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 30, 8, 0, tzinfo=timezone.utc)

SHORT = protocol_text(
    """
    media: [{days: "0-2", medium: M1}]
    factors: [{compound: A, conc: 1 uM, days: "0-2"}]
    feeds: [{days: "0-2", change: full}]
    events: [{days: 1, kind: sample, title: check, at: "13:00", qc: [{measure: pct, unit: "%", min: 60, on_fail: hold}]}]
    """
)


class World:
    def __init__(
        self,
        tmp_path: Path,
        text: str | None = None,
        plates: int = 2,
        proto_path: Path | None = None,
    ) -> None:
        self.clock = VirtualClock(T0)
        self.store = Store.open(tmp_path / "run.db", self.clock, durable=False)
        if proto_path is not None:
            self.proto = load_protocol(proto_path)
        else:
            res = load_text(text or SHORT, "short.yaml")
            assert res.ok, [d.format() for d in res.diagnostics]
            self.proto = res.protocol
        self.plan = resolve(
            self.proto,
            plates=plates,
            start=datetime(2026, 12, 1, 9, 0),
            timezone="Europe/Stockholm",
        )
        labels = [f"P{i + 1}" for i in range(plates)]
        self.run_id = register_run(
            self.store,
            self.clock,
            self.proto,
            self.plan,
            WorkcellRoles.simulated(labels),
            name="test",
            workcell_name="sim",
            workcell_text="",
            actor="tester",
        )
        self.devices = fake_workcell(self.clock)
        self.engine = Engine(
            self.store, self.clock, self.devices, EngineConfig(recovery_timeout_s=900)
        )

    def command(self, verb: str, **args: object) -> None:
        reason = str(args.pop("reason", ""))
        self.store.insert_command(
            verb, actor="tester", run_id=self.run_id, args=args, reason=reason
        )

    def run_until(self, pred, limit_days: float = 40) -> None:  # noqa: ANN001
        end = self.clock.now() + timedelta(days=limit_days)
        self.engine.run(until=lambda: pred() or self.clock.now() > end)

    @property
    def state(self) -> str:
        return self.store.get_run(self.run_id).state


@pytest.fixture
def world(tmp_path: Path) -> World:
    return World(tmp_path)


def test_a_run_waits_for_start_then_completes(world: World) -> None:
    world.engine.step()
    assert world.state == "planned"
    world.command("start")
    world.run_until(lambda: world.state == "completed")
    assert world.state == "completed"
    feeds = [a for a in world.devices["ot2-sim"].actions]
    assert len(feeds) == 3 * 2  # 3 days x 2 plates, each exactly once
    assert len({a["job"] for a in feeds}) == len(feeds)
    assert world.store.verify_chain().ok


def test_every_transition_is_in_the_audit_trail(world: World) -> None:
    world.command("start")
    world.run_until(lambda: world.state == "completed")
    for job in world.store.jobs(world.run_id):
        ev = world.store.events(world.run_id, entity="job", entity_id=job.id, limit=None)
        states = [e.to_state for e in ev if e.action == "transition"]
        assert states == ["ready", "running", "done"], (job.id, states)
    runs = [
        e.to_state
        for e in world.store.events(world.run_id, entity="run", limit=None)
        if e.action == "transition"
    ]
    assert runs == ["running", "completed"]


def test_device_was_told_only_after_the_commit(world: World) -> None:
    world.command("start")
    world.run_until(lambda: world.state == "completed")
    for job in world.store.jobs(world.run_id):
        evs = world.store.events(world.run_id, entity="job", entity_id=job.id, limit=None)
        running = next(e for e in evs if e.to_state == "running" and e.action == "transition")
        accepted = next(
            e for e in evs if e.action == "update" and "device_op_id" in e.data.get("updates", {})
        )
        assert running.seq < accepted.seq


def test_pause_stops_new_tasks_and_resume_goes_on(world: World) -> None:
    world.command("start")
    world.engine.step()
    world.command("pause", reason="incubator cleaning")
    world.engine.step()
    assert world.state == "paused"
    before = len(world.devices["ot2-sim"].actions)
    world.clock.sleep(3 * 86400)
    world.engine.step()
    world.clock.sleep(3600)
    world.engine.step()
    started_while_paused = [
        j
        for j in world.store.jobs(world.run_id)
        if j.started_at and j.started_at > T0 + timedelta(hours=2) and j.op == "fetch"
    ]
    assert not started_while_paused
    assert len(world.devices["ot2-sim"].actions) == before
    world.command("resume")
    world.run_until(lambda: world.state == "completed")
    assert world.state == "completed"


def test_pause_without_reason_is_refused_by_the_cli(tmp_path: Path, capsys) -> None:  # noqa: ANN001
    from labctl.cli.main import main

    w = World(tmp_path)
    assert main(["pause", str(w.run_id), "--db", str(tmp_path / "run.db")]) == 2  # usage
    assert "needs --reason" in capsys.readouterr().err


def test_skip_records_a_deviation(world: World) -> None:
    world.command("start")
    world.engine.step()
    task = world.plan.feeds()[-1].key
    world.command("skip", task=task, plate="P2", reason="plate contaminated")
    world.run_until(lambda: world.state == "completed")
    devs = world.store.events(world.run_id, action="deviation", limit=None)
    assert len(devs) == 1 and devs[0].reason == "plate contaminated"
    assert not any(a["job"].startswith(f"{task}/P2") for a in world.devices["ot2-sim"].actions)


def test_skip_needs_a_reason(world: World) -> None:
    world.command("start")
    world.command("skip", task=world.plan.feeds()[-1].key)
    world.engine.step()
    rows = world.store.events(world.run_id, entity="command", limit=None)
    assert any(e.to_state == "rejected" for e in rows)


def test_abort_skips_what_has_not_begun(world: World) -> None:
    world.command("start")
    world.engine.step()
    world.command("abort", reason="cells died")
    world.engine.run(until=lambda: not world.engine.picture.running)
    assert world.state == "aborted"
    assert not [j for j in world.store.jobs(world.run_id) if j.state in ("pending", "ready")]


def test_failure_asks_for_recovery_and_the_default_applies_after_the_timeout(world: World) -> None:
    world.devices["ot2-sim"].fail_next = 1
    world.command("start")
    world.run_until(lambda: bool(world.store.open_prompts(world.run_id)), limit_days=2)
    (p,) = world.store.open_prompts(world.run_id)
    assert (
        p.kind == "recovery"
        and p.default_choice == "hold"
        and set(p.choices) == {"retry", "skip", "hold"}
    )
    # nobody answers: after 15 min the default (hold) applies and a person must decide
    world.run_until(lambda: world.state == "holding", limit_days=1)
    assert world.state == "holding"
    (p2,) = world.store.open_prompts(world.run_id)
    assert p2.deadline is None and "retry" in p2.choices
    world.command("answer", prompt=p2.id, answer={"choice": "retry"})
    world.run_until(lambda: world.state == "completed")
    assert world.state == "completed"
    assert (
        len(world.devices["ot2-sim"].actions) == 6
    )  # the failed one did not happen; its retry did


def test_a_failed_dispense_is_never_retried_without_a_person(world: World) -> None:
    world.devices["ot2-sim"].fail_next = 1
    world.command("start")
    world.run_until(lambda: world.state == "holding", limit_days=2)
    failed = [j for j in world.store.jobs(world.run_id) if j.state == "failed"]
    assert len(failed) == 1 and failed[0].op == "lh_run"
    assert failed[0].attempts == 0


def test_door_alarm_holds_dispatch_until_cleared(world: World) -> None:
    inc = world.devices["inc-sim"]
    inc.alarm = DeviceAlarm("inc-sim", "door", "device door open")
    world.command("start")
    world.run_until(lambda: False, limit_days=0.5)
    assert any(a.code == "door" for a in world.store.active_alarms())
    assert not any(j.device == "inc-sim" and j.started_at for j in world.store.jobs(world.run_id))
    inc.alarm = None
    world.run_until(lambda: world.state == "completed")
    assert world.state == "completed"
    assert not any(a.code == "door" for a in world.store.active_alarms())


def test_qc_failure_holds_the_run(world: World) -> None:
    world.devices["operator"].qc_value = 10.0  # below min 60
    world.command("start")
    world.run_until(lambda: world.state == "holding", limit_days=3)
    assert world.state == "holding"
    qc = world.store.qc_values(world.run_id)
    assert qc and not qc[0].passed
    decision = [p for p in world.store.open_prompts(world.run_id) if p.kind == "decision"]
    assert decision and "Release" in decision[0].text
    for _ in range(2):  # each plate's sample fails its gate and holds the run
        world.command("release", reason="QC reviewed: proceed")
        world.run_until(lambda: world.state in ("holding", "completed"))
    assert world.state == "completed"
    assert len([q for q in world.store.qc_values(world.run_id) if not q.passed]) == 2
    assert not [p for p in world.store.open_prompts(world.run_id) if p.kind == "decision"]


def test_restart_reconciles_a_job_the_device_finished(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.command("start")
    w.run_until(
        lambda: any(
            w.engine.picture.jobs[i].op.value == "lh_run" for i in w.engine.picture.running
        ),
        limit_days=2,
    )
    # the engine process dies here; a new one starts on the same store and devices
    eng2 = Engine(w.store, w.clock, w.devices)
    eng2.run(until=lambda: w.state == "completed")
    assert w.state == "completed"
    jobs = [a["job"] for a in w.devices["ot2-sim"].actions]
    assert len(jobs) == len(set(jobs)) == 6


def test_restart_with_a_job_the_device_never_heard_of_retries_it(tmp_path: Path) -> None:
    w = World(tmp_path)
    w.command("start")
    w.run_until(lambda: bool(w.engine.picture.running), limit_days=2)
    jid = next(iter(w.engine.picture.running))
    job = w.engine.picture.jobs[jid]
    dev = w.devices[job.device]
    # simulate: committed RUNNING, crashed before the device was told (no op on the device, no op id)
    op_id = job.op_id
    dev.ops.pop(op_id)
    w.store.transition(
        "job",
        jid,
        "running",
        expected_from="running",
        actor="test",
        reason="lose op id",
        updates={"device_op_id": None},
    )
    eng2 = Engine(w.store, w.clock, w.devices)
    eng2.recover()
    assert eng2.picture.jobs[jid].state is JobState.READY
    evs = w.store.events(w.run_id, entity="job", entity_id=jid, action="reconciled", limit=None)
    assert evs and "never started" in evs[0].reason


def test_restart_where_the_device_cannot_tell_asks_the_operator(tmp_path: Path) -> None:
    from labctl.devices import NotKnown

    w = World(tmp_path)
    w.command("start")
    w.run_until(lambda: bool(w.engine.picture.running), limit_days=2)
    jid = next(iter(w.engine.picture.running))
    job = w.engine.picture.jobs[jid]
    w.store.transition(
        "job",
        jid,
        "running",
        expected_from="running",
        actor="test",
        reason="lose op id",
        updates={"device_op_id": None},
    )

    def cannot_tell(job_key: str) -> str | None:
        raise NotKnown("no history")

    w.devices[job.device].find_op = cannot_tell  # type: ignore[method-assign]
    eng2 = Engine(w.store, w.clock, w.devices)
    eng2.recover()
    assert eng2.picture.jobs[jid].state is JobState.INTERRUPTED
    (p,) = [p for p in w.store.open_prompts(w.run_id) if p.kind == "interrupted"]
    assert set(p.choices) == {"done", "retry", "skip", "hold"} and p.default_choice is None


def test_whole_kriks_run_on_fakes(tmp_path: Path) -> None:
    w = World(tmp_path, plates=2, proto_path=ROOT / "protocols/kriks2011_da.yaml")
    w.command("start")
    w.run_until(lambda: w.state == "completed", limit_days=40)
    assert w.state == "completed"
    lh = w.devices["ot2-sim"].actions
    assert len(lh) == 26 * 2
    assert w.store.verify_chain().ok
    assert RunState(w.state) is RunState.COMPLETED


def test_lots_given_with_an_answer_go_into_the_batch_record(tmp_path: Path) -> None:
    from labctl.devices import OpState, OpStatus
    from labctl.reports.batch import batch_record

    w = World(tmp_path)
    op = w.devices["operator"]
    original = op.poll

    def poll_with_lots(op_id: str) -> OpStatus:
        st = original(op_id)
        if st.state is OpState.SUCCEEDED:
            return OpStatus(
                OpState.SUCCEEDED, "answered", result={**st.result, "lots": {"NB_B27": "LOT-42"}}
            )
        return st

    op.poll = poll_with_lots  # type: ignore[method-assign]
    w.command("start")
    w.run_until(lambda: w.state == "completed")
    lots = w.store.reagent_lots(w.run_id)
    assert lots and {x.lot for x in lots} == {"LOT-42"}
    assert "LOT-42" in batch_record(w.store, w.run_id)


def test_a_partial_liquid_handling_failure_is_never_offered_retry(world: World) -> None:
    lh = world.devices["ot2-sim"]
    lh.fail_next, lh.partial_failures = 1, True
    world.command("start")
    world.run_until(lambda: bool(world.store.open_prompts(world.run_id)), limit_days=2)
    (p,) = world.store.open_prompts(world.run_id)
    assert set(p.choices) == {"done", "skip", "hold"} and "will not be run again" in p.text
    world.command(
        "answer", prompt=p.id, answer={"choice": "done"}, reason="finished the wells by hand"
    )
    world.run_until(lambda: world.state == "completed")
    assert world.state == "completed"
    assert len(world.devices["ot2-sim"].actions) == 5  # the failed run is not repeated


def test_a_held_run_raises_an_alarm_until_released(world: World) -> None:
    world.devices["ot2-sim"].fail_next = 1
    world.command("start")
    world.run_until(lambda: world.state == "holding", limit_days=2)
    assert [a.code for a in world.store.active_alarms(world.run_id)] == ["hold"]


def test_an_unanswered_prompt_raises_an_alarm_that_clears_when_answered(world: World) -> None:
    op = world.devices["operator"]
    op.durations["prompt"] = 3 * 3600.0  # the operator takes three hours to answer
    world.command("start")
    world.run_until(
        lambda: any(a.code == "no-answer" for a in world.store.active_alarms()), limit_days=2
    )
    assert any(a.code == "no-answer" for a in world.store.active_alarms())
    world.run_until(lambda: world.state == "completed")
    assert not any(a.code == "no-answer" for a in world.store.active_alarms())


class DoorWatch:
    """A watch for a fake workcell whose incubator door is open from ``opens`` to ``closes``
    (set by an engine hook, as the simulated workcell's tick does); nothing else changes."""

    def __init__(self, opens: datetime, closes: datetime) -> None:
        self.edges = (opens, closes)

    def quiet(self, since: datetime, now: datetime) -> bool:
        return not any(since <= t <= now for t in self.edges)

    def next_change(self, now: datetime) -> datetime | None:
        return min((t for t in self.edges if t > now), default=None)


def _run_with_door_fault(tmp_path: Path, *, watch: bool) -> tuple[World, list[tuple]]:
    w = World(tmp_path)
    opens = datetime(2026, 12, 2, 7, 3, tzinfo=timezone.utc)  # day 1, before its 09:00 feed
    closes = opens + timedelta(hours=2, minutes=11)
    inc = w.devices["inc-sim"]

    def door(now: datetime) -> None:
        inc.alarm = DeviceAlarm("inc-sim", "door", "door open") if opens <= now < closes else None

    w.engine = Engine(
        w.store,
        w.clock,
        w.devices,
        EngineConfig(recovery_timeout_s=900, alarm_check_s=600),
        watch=DoorWatch(opens, closes) if watch else None,
    )
    w.engine.hooks.append(door)
    w.command("start")
    w.run_until(lambda: w.state == "completed")
    trace = [
        *((a.code, a.raised_at, a.cleared_at) for a in w.store.alarms_for_run(w.run_id)),
        *((j.seq, j.op, j.state, j.started_at, j.finished_at) for j in w.store.jobs(w.run_id)),
    ]
    return w, trace


def test_a_quiet_watch_skips_checks_but_the_run_is_the_same(tmp_path: Path) -> None:
    periodic, expected = _run_with_door_fault(tmp_path / "periodic", watch=False)
    skipping, got = _run_with_door_fault(tmp_path / "skipping", watch=True)
    assert got == expected
    [door] = [a for a in skipping.store.alarms_for_run(skipping.run_id) if a.code == "door"]
    # Raised and cleared by the first check on the 10-minute grid at or after each edge.
    day1 = datetime(2026, 12, 2, tzinfo=timezone.utc)
    assert (door.raised_at, door.cleared_at) == (
        day1 + timedelta(hours=7, minutes=10),  # opened 07:03
        day1 + timedelta(hours=9, minutes=20),  # closed 09:14
    )
    grid = periodic.engine.watcher.checks_made
    # Most checks were slept through, and none was needed to see the fault.
    assert skipping.engine.watcher.checks_made * 3 < grid
    # Every check of the periodic engine was either made or slept through, none lost.
    assert skipping.engine.watcher.checks_made + skipping.engine.watcher.checks_skipped == grid


def _lh_jobs(w: World) -> list:
    return [j for j in w.engine.picture.jobs.values() if j.op.value == "lh_run"]


@pytest.mark.parametrize("takes_s", [1500.0, 100.0])
def test_plans_follow_the_pace_the_devices_really_keep(tmp_path: Path, takes_s: float) -> None:
    # The generic estimates (jobs.Durations) are wrong for this robot: its runs take
    # `takes_s`. After a few runs the plan and the first poll follow what it really takes.
    w = World(tmp_path, plates=3)
    w.devices["ot2-sim"].durations["lh_run"] = takes_s
    w.command("start")
    w.run_until(lambda: sum(j.state is JobState.DONE for j in _lh_jobs(w)) >= 5)
    assert w.state == "running"
    [estimate] = {j.duration_s for j in _lh_jobs(w)}
    pending = next(j for j in _lh_jobs(w) if j.state is JobState.PENDING)
    planned = w.engine.pace.planned(pending)
    if takes_s > estimate:
        # Learned from when the engine saw them end: within a poll interval of the truth.
        assert takes_s <= planned <= takes_s + w.engine.cfg.poll_max_s
    else:
        # Seen ending at the first poll, a little before the plan: the plan comes down.
        assert max(estimate * 0.5, takes_s) <= planned < estimate
    # A restarted engine learns the same from the store.
    again = Engine(w.store, w.clock, w.devices, EngineConfig())
    again.load()
    assert again.pace.planned(again.picture.jobs[pending.id]) == planned


def test_a_robot_slower_than_estimated_stops_re_planning_once_learned(tmp_path: Path) -> None:
    w = World(tmp_path, plates=3)
    w.devices["ot2-sim"].durations["lh_run"] = 1500.0  # far over the estimate: every chain slips
    replans: list[datetime] = []
    do_replan = w.engine.planner.replan

    def counting(now: datetime, blocked: set[str]) -> None:
        replans.append(now)
        do_replan(now, blocked)

    w.engine.planner.replan = counting  # type: ignore[method-assign]
    w.command("start")
    w.run_until(lambda: w.state == "completed")
    lh = sorted(_lh_jobs(w), key=lambda j: j.started_at)
    # Slips re-plan while the pace is being learned (the first day), then stop.
    assert len(replans) <= 1 + 3
    assert all(r < lh[4].started_at for r in replans[1:])


def test_a_console_answer_to_a_task_prompt_takes_effect_at_once(tmp_path: Path) -> None:
    from labctl.operator import StoreOperator

    w = World(tmp_path, plates=1)
    w.devices["operator"] = StoreOperator(w.store)
    w.engine = Engine(w.store, w.clock, w.devices, EngineConfig(poll_max_s=600))
    w.command("start")
    w.run_until(lambda: bool(w.store.open_prompts(w.run_id)), limit_days=2)
    w.clock.advance(1000)  # nobody there for a while: the prompt's polls grow apart
    w.engine.step()
    [prompt] = w.store.open_prompts(w.run_id)
    w.command("answer", prompt=prompt.id, answer={"done": True})
    answered_at = w.clock.now()
    w.engine.step()  # applies the answer, and polls that prompt's job in the same pass
    job = next(j for j in w.store.jobs(w.run_id) if j.id == prompt.job_id)
    assert (job.state, job.finished_at) == ("done", answered_at)


class Punctual(FakeOperator):
    """Says when it will answer (as the simulated workcell's scripted operator does)."""

    def poll(self, op_id: str) -> OpStatus:
        st = super().poll(op_id)
        if st.state is OpState.RUNNING:
            op = self.ops[op_id]
            end = datetime.fromisoformat(op["start"]) + timedelta(seconds=op["duration"])
            return OpStatus(OpState.RUNNING, st.detail, check_at=end)
        return st


def test_a_device_that_says_when_to_look_is_polled_then(tmp_path: Path) -> None:
    polls: list[datetime] = []

    def run(w: World) -> None:
        op = w.devices["operator"]
        real = op.poll

        def counted(op_id: str) -> OpStatus:
            polls.append(w.clock.now())
            return real(op_id)

        op.poll = counted  # type: ignore[method-assign]
        w.command("start")
        w.run_until(lambda: w.state == "completed")

    plain = World(tmp_path / "plain")
    run(plain)
    growing = len(polls)
    polls.clear()
    punctual = World(tmp_path / "punctual")
    punctual.devices["operator"] = Punctual(
        "operator", punctual.clock, None, Killer(None), {"prompt": 120.0}
    )
    punctual.engine = Engine(punctual.store, punctual.clock, punctual.devices, EngineConfig())
    run(punctual)
    prompts = [j for j in punctual.store.jobs(punctual.run_id) if j.op == "prompt"]
    # Each prompt: polled when asked, then when the device said: twice.
    assert len(polls) == 2 * len(prompts) < growing
    assert all(
        (j.finished_at - j.started_at).total_seconds() == 120.0
        for j in prompts
        if j.state == "done"
    )


class PreparingLH(FakeLiquidHandler):
    """A liquid handler that can prepare jobs (labctl.devices.Preparable); one whose key
    holds ``fail_prepare`` fails to."""

    fail_prepare = "d1-"

    def __post_init__(self) -> None:
        super().__post_init__()
        self.prepared: list[tuple[str, dict, datetime]] = []
        self.started: dict[str, tuple[dict, datetime]] = {}

    def prepare(self, job_key: str, params: dict) -> None:
        from labctl.errors import DeviceCommunicationError

        self.prepared.append((job_key, dict(params), self.clock.now()))
        if self.fail_prepare in job_key:
            raise DeviceCommunicationError(self.name, f"prepare {job_key}", "robot offline")

    def start_job(self, job_key: str, params: dict) -> str:
        self.started[job_key] = (dict(params), self.clock.now())
        return super().start_job(job_key, params)


def test_liquid_handling_jobs_are_prepared_once_ahead_and_a_failed_prepare_is_only_noted(
    tmp_path: Path,
) -> None:
    from labctl.devices import Preparable

    w = World(tmp_path)
    lh = PreparingLH("ot2-sim", w.clock, None, Killer(None), {"lh_run": 600.0})
    assert isinstance(lh, Preparable)
    w.devices["ot2-sim"] = lh
    w.engine = Engine(w.store, w.clock, w.devices, EngineConfig(recovery_timeout_s=900))
    w.engine.step()
    assert lh.prepared == []  # not before the run starts
    w.command("start")
    w.run_until(lambda: w.state == "completed")
    assert w.state == "completed"
    keys = [key for key, _, _ in lh.prepared]
    assert sorted(keys) == sorted(lh.started) and len(set(keys)) == len(keys) == 6
    for key, params, at in lh.prepared:
        started_params, started_at = lh.started[key]
        assert at <= started_at
        assert params == started_params  # the deck position the schedule gives, too
    ahead = [lh.started[k][1] - at for k, _, at in lh.prepared]
    assert max(ahead) <= timedelta(seconds=EngineConfig().prepare_ahead_s) + timedelta(hours=2)
    assert min(ahead) > timedelta(hours=12)  # a day ahead, not as the plate waits
    # The day-1 jobs could not be prepared: noted, and they ran all the same.
    failed = [e for e in w.store.events(run_id=w.run_id) if e.action == "prepare-failed"]
    assert len(failed) == 2 and all("robot offline" in e.reason for e in failed)
    assert sum("d1-" in k for k in lh.started) == 2


def test_where_each_plate_is_follows_its_physical_steps(world: World) -> None:
    from labctl.reports.locations import plate_locations

    locs = {p.plate: p for p in plate_locations(world.store, world.run_id)}
    assert locs["P1"].where == "inc-sim slot 1" and locs["P2"].where == "inc-sim slot 2"
    world.command("start")
    # Until the first liquid handling runs: its plate was fetched and carried to the deck.
    world.run_until(
        lambda: any(
            world.engine.picture.jobs[i].op.value == "lh_run" for i in world.engine.picture.running
        ),
        limit_days=3,
    )
    [lh] = [
        world.engine.picture.jobs[i]
        for i in world.engine.picture.running
        if world.engine.picture.jobs[i].op.value == "lh_run"
    ]
    plate = world.engine.picture.chains[lh.task_id].plate
    here = {p.plate: p for p in plate_locations(world.store, world.run_id)}[plate]
    assert here.where.startswith("ot2-sim deck position") and here.certain
    world.run_until(lambda: world.state == "completed")
    assert {p.plate: p.where for p in plate_locations(world.store, world.run_id)} == {
        "P1": "inc-sim slot 1",
        "P2": "inc-sim slot 2",
    }
