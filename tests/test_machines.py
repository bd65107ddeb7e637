"""Run and job state machines: one Enum, one table; random trigger sequences against the store."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labctl.clock import VirtualClock
from labctl.engine.machines import (
    JOB_MACHINE,
    JOB_TRANSITIONS,
    RUN_MACHINE,
    RUN_TRANSITIONS,
    JobState,
    RunState,
)
from labctl.errors import InvalidTransition
from labctl.store import Store

RUN_TRIGGERS = sorted({t for t, _, _ in RUN_TRANSITIONS})
JOB_TRIGGERS = sorted({t for t, _, _ in JOB_TRANSITIONS})


def test_tables_name_only_declared_states() -> None:
    for table, enum in ((RUN_TRANSITIONS, RunState), (JOB_TRANSITIONS, JobState)):
        for _, sources, dest in table:
            assert dest in enum and all(s in enum for s in sources)


def test_invalid_trigger_raises_and_commits_nothing() -> None:
    calls = []
    with pytest.raises(InvalidTransition, match="cannot start while completed"):
        RUN_MACHINE.fire(1, RunState.COMPLETED, "start", lambda *a, **k: calls.append(a))
    assert calls == []


def test_a_failing_commit_leaves_the_state_unchanged() -> None:
    def boom(*a: object, **k: object) -> None:
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError):
        JOB_MACHINE.fire(1, JobState.READY, "start", boom)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    clock = VirtualClock(datetime(2026, 12, 1, tzinfo=timezone.utc))
    s = Store.open(tmp_path_factory.mktemp("m") / "m.db", clock, durable=False)
    run = s.insert_run(
        "r",
        protocol_text="x",
        protocol_id="p",
        protocol_version="1",
        parameters={},
        plates=1,
        start=clock.now(),
        timezone="UTC",
        workcell_name="w",
        workcell_text="",
        actor="t",
        state="planned",
    )
    task = s.insert_task(run.id, key="k", kind="feed", day=0, due=clock.now(), spec={}, actor="t")
    s._test_ids = (run.id, task.id)  # type: ignore[attr-defined]
    return s


def _commit(store: Store):  # noqa: ANN202
    def commit(kind: str, eid: int, src: str, dst: str, trigger: str, **kw: object) -> None:
        store.transition(kind, eid, dst, expected_from=src, actor="hypothesis", reason=trigger)

    return commit


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(RUN_TRIGGERS), max_size=25))
def test_random_run_triggers_reach_only_declared_states_and_are_audited(
    store: Store, triggers: list[str]
) -> None:
    run_id, _ = store._test_ids  # type: ignore[attr-defined]
    state = RunState(store.get_run(run_id).state)
    before = len(store.events(run_id, entity="run", entity_id=run_id, limit=None))
    fired = 0
    for t in triggers:
        try:
            new = RUN_MACHINE.fire(run_id, state, t, _commit(store))
        except InvalidTransition:
            assert state not in [s for trig, srcs, _ in RUN_TRANSITIONS if trig == t for s in srcs]
            continue
        assert new in RunState
        state = new
        fired += 1
        assert store.get_run(run_id).state == state.value
    after = store.events(run_id, entity="run", entity_id=run_id, limit=None)
    assert len(after) - before == fired
    assert store.verify_chain().ok


@settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(st.lists(st.sampled_from(JOB_TRIGGERS), max_size=25))
def test_random_job_triggers(store: Store, triggers: list[str]) -> None:
    _, task_id = store._test_ids  # type: ignore[attr-defined]
    job = store.insert_job(
        task_id, seq=len(store.jobs(store._test_ids[0])), device="d", op="fetch", spec={}, actor="t"
    )  # type: ignore[attr-defined]
    state = JobState.PENDING
    for t in triggers:
        try:
            state = JOB_MACHINE.fire(job.id, state, t, _commit(store))  # type: ignore[assignment]
        except InvalidTransition:
            continue
        assert store.get_job(job.id).state == state.value
    transitions = [
        e
        for e in store.events(entity="job", entity_id=job.id, limit=None)
        if e.action == "transition"
    ]
    # every state the job passed through is in the trail, in order, each from the one before
    prev = "pending"
    for e in transitions:
        assert e.from_state == prev
        prev = e.to_state
    assert prev == state.value
