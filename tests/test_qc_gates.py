"""QC gates through the operator's path: an answer needs every value, a value out of limits
holds, aborts or extends the run as its gate says, and a hold is released by a command."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from labctl.engine import Engine, EngineConfig
from labctl.operator import StoreOperator
from tests.helpers import protocol_text
from tests.test_engine import World


def _gated(on_fail: str, extra: str = "") -> str:
    return protocol_text(
        f"""
        media: [{{days: "0-3", medium: M1}}]
        factors: [{{compound: A, conc: 1 uM, days: "0-3"}}]
        feeds: [{{days: "0-3", change: full}}]
        events: [{{days: 1, kind: sample, title: check, at: "13:00",
                  qc: [{{measure: pct, unit: "%", min: 60, on_fail: {on_fail}{extra}}}]}}]
        """
    )


def _world(tmp_path: Path, text: str) -> World:
    w = World(tmp_path, text=text, plates=1)
    w.devices["operator"] = StoreOperator(w.store)  # prompts answered through commands
    w.engine = Engine(w.store, w.clock, w.devices, EngineConfig())
    w.command("start")
    return w


def _qc_prompt(w: World):  # noqa: ANN202
    def asked() -> bool:
        return any(
            any(isinstance(c, dict) for c in p.choices) for p in w.store.open_prompts(w.run_id)
        )

    w.run_until(asked, limit_days=3)
    return next(
        p for p in w.store.open_prompts(w.run_id) if any(isinstance(c, dict) for c in p.choices)
    )


def _answer(w: World, prompt_id: int, answer: dict) -> str:  # noqa: ANN001
    cmd = w.store.insert_command(
        "answer",
        actor="bob",
        run_id=w.run_id,
        args={"prompt": prompt_id, "answer": answer},
        reason="",
    )
    w.engine.step()
    return w.store.get_command(cmd.id).state


def _answer_prompts_done(w: World) -> None:
    """Answer the plain task prompts (carry the plate, ...) as a person would."""
    for p in w.store.open_prompts(w.run_id):
        if p.kind == "task" and not any(isinstance(c, dict) for c in p.choices):
            _answer(w, p.id, {"done": True})


def _run_with_answers(w: World, until, days: float = 6) -> None:  # noqa: ANN001
    end = w.clock.now() + timedelta(days=days)
    while not until() and w.clock.now() < end:
        _answer_prompts_done(w)
        w.engine.run(until=lambda: bool(w.store.open_prompts(w.run_id)) or until(), max_steps=50)
        if not w.store.open_prompts(w.run_id) and not until():
            w.clock.advance(60)


def test_a_gate_cannot_be_passed_without_its_value(tmp_path: Path) -> None:
    w = _world(tmp_path, _gated("hold"))
    _run_with_answers(
        w,
        lambda: any(isinstance(c, dict) for p in w.store.open_prompts(w.run_id) for c in p.choices),
    )
    p = _qc_prompt(w)
    assert _answer(w, p.id, {"done": True}) == "rejected"
    assert _answer(w, p.id, {"qc": {"pct": "lots"}}) == "rejected"
    [ev] = [
        e
        for e in w.store.events(w.run_id, entity="command", limit=None)
        if e.to_state == "rejected"
    ][:1]
    assert "give pct (%)" in ev.reason
    assert w.store.get_prompt(p.id).state == "open" and w.store.qc_values(w.run_id) == []
    assert _answer(w, p.id, {"qc": {"pct": 75}}) == "applied"
    w.engine.step()
    [qc] = w.store.qc_values(w.run_id)
    assert (qc.value, qc.passed) == (75.0, True)


def test_a_failed_hold_gate_holds_until_released_by_a_command(tmp_path: Path) -> None:
    w = _world(tmp_path, _gated("hold"))
    _run_with_answers(
        w,
        lambda: any(isinstance(c, dict) for p in w.store.open_prompts(w.run_id) for c in p.choices),
    )
    p = _qc_prompt(w)
    assert _answer(w, p.id, {"qc": {"pct": 40}}) == "applied"
    w.engine.step()
    assert w.state == "holding"
    [decision] = [x for x in w.store.open_prompts(w.run_id) if x.kind == "decision"]
    assert decision.choices == ["release", "abort"]
    assert any(a.code == "hold" for a in w.store.alarms_for_run(w.run_id, active_only=True))
    cmd = w.store.insert_command("release", actor="sue", run_id=w.run_id, reason="re-stained: fine")
    w.engine.step()
    assert w.store.get_command(cmd.id).state == "applied"
    assert w.state == "running" and w.store.get_prompt(decision.id).state == "answered"
    assert not any(a.code == "hold" for a in w.store.alarms_for_run(w.run_id, active_only=True))


def test_a_failed_extend_gate_shifts_the_rest_of_the_run(tmp_path: Path) -> None:
    w = _world(tmp_path, _gated("extend", ", by: 1 d"))
    before = {t.key: t.due for t in w.store.tasks(w.run_id)}
    _run_with_answers(
        w,
        lambda: any(isinstance(c, dict) for p in w.store.open_prompts(w.run_id) for c in p.choices),
    )
    p = _qc_prompt(w)
    assert _answer(w, p.id, {"qc": {"pct": 10}}) == "applied"
    w.engine.step()
    after = {t.key: (t.due, t.state) for t in w.store.tasks(w.run_id)}
    moved = [k for k, (due, state) in after.items() if state == "pending"]
    assert moved and all(after[k][0] - before[k] == timedelta(days=1) for k in moved)
    devs = [e for e in w.store.events(w.run_id, action="deviation", limit=None)]
    assert any(e.data.get("kind") == "extended" for e in devs)
    _run_with_answers(w, lambda: w.state == "completed", days=8)
    assert w.state == "completed"
    feeds = [t for t in w.store.tasks(w.run_id) if "feed" in t.key]
    assert all(t.state == "done" for t in feeds)


@pytest.mark.parametrize("choice", ["banana"])
def test_a_recovery_answer_that_is_not_a_choice_is_rejected(tmp_path: Path, choice: str) -> None:
    w = World(tmp_path, plates=1)
    w.devices["ot2-sim"].fail_next = 1
    w.command("start")
    w.run_until(
        lambda: any(p.kind == "recovery" for p in w.store.open_prompts(w.run_id)), limit_days=2
    )
    [p] = [x for x in w.store.open_prompts(w.run_id) if x.kind == "recovery"]
    assert _answer(w, p.id, {"choice": choice}) == "rejected"
    assert w.store.get_prompt(p.id).state == "open"
