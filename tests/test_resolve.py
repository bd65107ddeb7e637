"""Resolution into dated tasks: due times, windows, ties, and the well's contents."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

import pytest

from labctl.errors import ParameterError, PlanError
from labctl.plan.resolve import AdditionSpec, FeedSpec, TaskKind, WashoutSpec, resolve
from tests.helpers import load

START = datetime(2026, 12, 1, 9, 0)


def plan_of(schedule: str, extra: str = "", **kw):  # noqa: ANN201
    res = load(schedule, extra)
    assert res.ok, [d.format() for d in res.diagnostics]
    return resolve(
        res.protocol,
        kw.pop("params", None),
        plates=kw.pop("plates", 2),
        start=START,
        timezone=kw.pop("tz", "Europe/Stockholm"),
        **kw,
    )


def conc(task, name: str, unit: str) -> float:
    return dict(task.well_after.conc)[name].to(unit).magnitude


def test_due_times_are_local_wall_times_in_utc() -> None:
    p = plan_of("""
        media: [{days: "0-1", medium: M1}]
        feeds: [{days: "0-1", change: full}]
    """)
    f0, f1 = p.feeds()
    assert f0.due == datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc)  # 09:00 CET
    assert f1.due - f0.due == timedelta(days=1)
    assert f0.window_start == f0.due - timedelta(hours=1) and f0.window_end == f0.due + timedelta(
        hours=1
    )


def test_dst_change_keeps_the_wall_time() -> None:
    res = load("""
        media: [{days: "0-1", medium: M1}]
        feeds: [{days: "0-1", change: full}]
    """)
    p = resolve(
        res.protocol, plates=1, start=datetime(2026, 3, 28, 9, 0), timezone="Europe/Stockholm"
    )
    f0, f1 = p.feeds()
    assert f1.due - f0.due == timedelta(hours=23)  # clocks go forward on 29 March
    assert p.local(f1.due).hour == 9


def test_after_previous_ties_to_the_feed_before() -> None:
    p = plan_of("""
        media: [{days: "0-1", medium: M1}]
        feeds:
          - {days: 0, change: full, at: "10:30"}
          - {days: 1, change: full, after_previous: 20 h, window: 30 min}
    """)
    f0, f1 = p.feeds()
    assert f1.due - f0.due == timedelta(hours=20)
    assert f1.after_previous_s == 72000 and f1.previous_key == f0.key
    assert f1.window_end - f1.due == timedelta(minutes=30)


def test_half_changes_track_the_well() -> None:
    p = plan_of("""
        media: [{days: "0-2", medium: M1}]
        factors: [{compound: A, conc: 4 uM, days: 0}]
        feeds:
          - {days: 0, change: full}
          - {days: "1-2", change: half}
    """)
    f0, f1, f2 = p.feeds()
    assert conc(f0, "A", "uM") == pytest.approx(4)
    assert conc(f1, "A", "uM") == pytest.approx(2)
    assert conc(f2, "A", "uM") == pytest.approx(1)
    assert f1.spec.remove_ul == pytest.approx(1000) and f1.spec.add_ul == pytest.approx(1000)


def test_fractional_change_and_top_up() -> None:
    p = plan_of("""
        media: [{days: "0-2", medium: M1}]
        factors: [{compound: A, conc: 10 uM, days: 0}]
        feeds:
          - {days: 0, change: full}
          - {days: 1, change: 0.3}
          - {days: 2, change: top-up, volume: 1 mL}
    """)
    f0, f1, f2 = p.feeds()
    assert conc(f1, "A", "uM") == pytest.approx(7)
    assert f2.well_after.volume_ul == pytest.approx(3000)
    assert conc(f2, "A", "uM") == pytest.approx(7 * 2 / 3)


def test_dose_well_makes_fresh_medium_stronger() -> None:
    p = plan_of("""
        media: [{days: "0-1", medium: M1}]
        factors: [{compound: A, conc: 2 uM, days: 0}, {compound: A, conc: 3 uM, days: 1}]
        feeds:
          - {days: 0, change: full}
          - {days: 1, change: half, dose: well}
    """)
    f1 = p.feeds()[1]
    assert dict(f1.spec.recipe.factors)["A"].to("uM").magnitude == pytest.approx(4)
    assert conc(f1, "A", "uM") == pytest.approx(3)


def test_blend_parts_are_kept() -> None:
    p = plan_of("""
        media: [{days: 0, medium: {M1: 75%, M2: 25%}}]
        feeds: [{days: 0, change: full}]
    """)
    assert p.feeds()[0].spec.recipe.parts == (("M1", 0.75), ("M2", 0.25))


def test_addition_pulse_and_washout() -> None:
    p = plan_of("""
        media: [{days: 0, medium: M1}]
        factors: [{compound: B, conc: 100 ng/mL, days: 0}]
        feeds: [{days: 0, change: full}]
        additions: [{compound: Y, conc: 10 uM, days: 0, at: "12:00", pulse: 1 h, washout: {medium: PBS, times: 2}}]
    """)
    kinds = [t.kind for t in p.tasks]
    assert kinds == [TaskKind.FEED, TaskKind.ADDITION, TaskKind.WASHOUT]
    add, wo = p.tasks[1], p.tasks[2]
    assert isinstance(add.spec, AdditionSpec) and add.spec.stock_ul == pytest.approx(
        2000 * 10 / 9990
    )
    assert conc(add, "Y", "uM") == pytest.approx(10)
    assert (
        isinstance(wo.spec, WashoutSpec)
        and wo.spec.wash.medium == "PBS"
        and wo.spec.wash.times == 2
    )
    assert wo.due - add.due == timedelta(hours=1)
    assert "Y" not in dict(wo.well_after.conc)
    assert conc(wo, "B", "ng/mL") == pytest.approx(100)


def test_replate_changes_labware_and_volume() -> None:
    p = plan_of("""
        media: [{days: "0-1", medium: M1}]
        feeds: [{days: "0-1", change: full}]
        events:
          - {days: 1, kind: replate, title: split, at: "08:00", culture: {labware: corning_24_wellplate_3.4ml_flat, volume: 500 uL}}
    """)
    f1 = p.feeds()[1]
    assert f1.labware == "corning_24_wellplate_3.4ml_flat" and len(f1.wells) == 24
    assert f1.spec.add_ul == pytest.approx(500)


def test_event_range_is_due_once_with_window_over_the_range() -> None:
    p = plan_of("""
        media: [{days: "0-5", medium: M1}]
        feeds: [{days: "0-5", change: full}]
        events: [{days: "2-4", kind: sample, title: qc sample, at: "14:00"}]
    """)
    ev = [t for t in p.tasks if t.kind is TaskKind.EVENT]
    assert len(ev) == 1 and ev[0].day == 2
    assert p.local(ev[0].window_end).day == p.local(ev[0].due).day + 2


def test_parameters_override_and_bounds() -> None:
    extra = "parameters:\n  dose: {default: 3 uM, min: 1 uM, max: 6 uM}\n"
    sched = """
        media: [{days: 0, medium: M1}]
        factors: [{compound: A, conc: $dose, days: 0}]
        feeds: [{days: 0, change: full}]
    """
    p = plan_of(sched, extra, params={"dose": "0.002 mM"})
    assert conc(p.feeds()[0], "A", "uM") == pytest.approx(2)
    with pytest.raises(ParameterError, match="above its maximum"):
        plan_of(sched, extra, params={"dose": "7 uM"})
    with pytest.raises(ParameterError, match="did you mean 'dose'"):
        plan_of(sched, extra, params={"dosee": "2 uM"})
    with pytest.raises(ParameterError, match="same kind of unit"):
        plan_of(sched, extra, params={"dose": "2 mL"})


def test_overflow_is_a_plan_error() -> None:
    res = load("""
        media: [{days: "0-9", medium: M1}]
        feeds:
          - {days: 0, change: full}
          - {days: "1-9", change: top-up, volume: 2 mL}
    """)
    assert not res.ok
    assert any("above the 16.8 mL capacity" in d.message for d in res.errors)


def test_strict_resolve_raises_with_location() -> None:
    res = load("""
        media: [{days: "0-1", medium: M1}]
        feeds: [{days: 0, change: full}]
    """)
    with pytest.raises(PlanError):
        resolve(res.protocol, plates=0)


def test_feed_spec_types() -> None:
    p = plan_of("""
        media: [{days: 0, medium: M1}]
        feeds: [{days: 0, change: full, wash: {medium: PBS, volume: 1 mL, times: 2}}]
    """)
    s = p.feeds()[0].spec
    assert (
        isinstance(s, FeedSpec)
        and s.wash is not None
        and s.wash.volume_ul == 1000
        and s.wash.times == 2
    )
