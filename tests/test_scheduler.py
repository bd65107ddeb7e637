"""The scheduler (labctl.schedule.scheduler): invariants, operator hours, re-planning, late chains."""

from __future__ import annotations

import argparse
from collections import defaultdict
from dataclasses import replace
from datetime import datetime, time, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from labctl.cli.protocol_cmds import suggest_start as suggest_starts_cli
from labctl.errors import ParameterError, PlanError
from labctl.jobs import Chain, Hold, JobSpec, Op, Role, WorkcellRoles, expand
from labctl.plan.resolve import resolve
from labctl.schedule.scheduler import Schedule, Slot, schedule
from labctl.schedule.suggest import suggest_starts
from labctl.validate import load_protocol
from labctl.workcell import OperatorCalendar
from tests.helpers import load, protocol_text

UTC = timezone.utc
T0 = datetime(2027, 3, 1, 6, 0, tzinfo=UTC)  # a Monday
REPO = Path(__file__).resolve().parent.parent
ROLES = {
    "inc": Role.INCUBATOR,
    "arm": Role.MOVER,
    "lh": Role.LIQUID_HANDLER,
    "op": Role.OPERATOR,
}


def s(seconds: float) -> timedelta:
    return timedelta(seconds=seconds)


def mk_chain(
    key: str,
    jobs: list[tuple[str, float]],
    *,
    ws: datetime,
    we: datetime,
    due: datetime | None = None,
    main: int = 0,
    manual: bool = False,
    holds: tuple[Hold, ...] = (),
    previous: str | None = None,
    after_s: float | None = None,
    max_out_s: float | None = None,
) -> Chain:
    """A chain built by hand: ``jobs`` are (device, seconds); key is "task/plate"."""
    task, plate = key.rsplit("/", 1)
    specs = tuple(
        JobSpec(f"{key}/{i}", task, plate, i, ROLES[dev], dev, Op.PROMPT, {}, float(d))
        for i, (dev, d) in enumerate(jobs)
    )
    return Chain(
        key,
        task,
        plate,
        specs,
        due or ws,
        ws,
        we,
        max_out_s,
        manual,
        after_s,
        previous,
        main_seq=main,
        holds=holds,
    )


def feed_chain(key: str, due: datetime, window_s: float = 3600, **kw: object) -> Chain:
    """fetch 20 s, arm 30 s, LH 270 s, arm 30 s, store 20 s, main = the LH run."""
    return mk_chain(
        key,
        [("inc", 20), ("arm", 30), ("lh", 270), ("arm", 30), ("inc", 20)],
        ws=due - s(window_s),
        we=due + s(window_s),
        due=due,
        main=2,
        holds=(
            Hold("inc:transfer", 0, 1),
            Hold("lh:deck", 1, 3, (1, 3)),
            Hold("inc:transfer", 3, 4),
        ),
        **kw,  # type: ignore[arg-type]
    )


# --- invariant checks ---------------------------------------------------------------------


def check_invariants(
    chains: list[Chain],
    sch: Schedule,
    now: datetime,
    hours: dict[int, tuple[time, time]] | None = None,
    tz: str = "UTC",
    fixed: dict[str, Slot] | None = None,
) -> None:
    fixed = fixed or {}
    by_key = {c.key: c for c in chains}
    assert set(sch.chains) == set(by_key)
    # every job has a slot on its own device
    for c in chains:
        for j in c.jobs:
            assert sch.slots[j.key].device == j.device
    # no device does two things at once
    per_dev: dict[str, list[Slot]] = defaultdict(list)
    for sl in sch.slots.values():
        per_dev[sl.device].append(sl)
    for dev, sls in per_dev.items():
        sls.sort(key=lambda x: (x.start, x.end))
        for a, b in zip(sls, sls[1:], strict=False):
            if a.end > a.start and b.end > b.start:
                assert a.end <= b.start, f"{dev}: {a} overlaps {b}"
    for c in chains:
        cp = sch.chains[c.key]
        sl = [sch.slots[j.key] for j in c.jobs]
        # seq order, back to back
        for a, b in zip(sl, sl[1:], strict=False):
            if b.job_key not in fixed:
                assert a.end <= b.start
        for j, x in zip(c.jobs, sl, strict=True):
            if j.key not in fixed:
                assert x.end - x.start == s(j.duration_s)
                assert x.start >= now
        assert cp.start == min(x.start for x in sl) and cp.end == max(x.end for x in sl)
        assert cp.main_start == sl[c.main_seq].start
        # never before the window; on time unless listed late
        if c.main.key not in fixed:
            assert cp.main_start >= cp.window_start
        assert cp.slack_s == (cp.window_end - cp.main_start).total_seconds()
        if c.key not in sch.late and c.main.key not in fixed:
            assert cp.main_start <= cp.window_end
            if hours and c.manual and not any(j.key in fixed for j in c.jobs):
                assert inside_hours(cp.start, cp.end, hours, tz), c.key
        elif c.key in sch.late:
            assert cp.late_reason
            assert cp.main_start > cp.window_end or cp.late_reason.startswith("no operator")
        # ties: due moves with the previous chain's main start; starts after it ends
        if c.previous_key in by_key:
            prev = sch.chains[c.previous_key]
            assert cp.due == prev.main_start + s(c.after_previous_s or 0)
            assert cp.window_start - cp.due == c.window_start - c.due
            assert cp.start >= prev.end
        elif c.previous_key is None:
            assert (cp.due, cp.window_start, cp.window_end) == (c.due, c.window_start, c.window_end)
    # chains of one plate never overlap, and keep their plan order
    per_plate: dict[str, list[tuple[int, Chain]]] = defaultdict(list)
    for i, c in enumerate(chains):
        if c.plate != "*":
            per_plate[c.plate].append((i, c))
    for items in per_plate.values():
        items.sort(key=lambda ic: (ic[1].due, ic[0]))
        for (_, a), (_, b) in zip(items, items[1:], strict=False):
            assert sch.chains[a.key].end <= sch.chains[b.key].start, (a.key, b.key)
    # no two plates on one place (deck position, transfer station) at once
    places: dict[tuple[str, int], list[tuple[datetime, datetime, str]]] = defaultdict(list)
    for c in chains:
        for h in c.holds:
            pos = sch.chains[c.key].deck_slot if h.place.endswith(":deck") else h.positions[0]
            assert pos in h.positions
            a = sch.slots[c.jobs[h.first].key].start
            b = sch.slots[c.jobs[h.last].key].end
            if b > a:  # a plate that spends no time there does not occupy it
                places[(h.place, pos)].append((a, b, c.key))
    for ivs in places.values():
        ivs.sort()
        for a, b in zip(ivs, ivs[1:], strict=False):
            assert a[1] <= b[0], f"{a[2]} and {b[2]} share a place"


def inside_hours(a: datetime, b: datetime, hours: dict[int, tuple[time, time]], tz: str) -> bool:
    la, lb = a.astimezone(ZoneInfo(tz)), b.astimezone(ZoneInfo(tz))
    h = hours.get(la.weekday())
    return h is not None and la.date() == lb.date() and h[0] <= la.time() and lb.time() <= h[1]


# --- property tests -----------------------------------------------------------------------


@st.composite
def chain_sets(draw: st.DrawFn) -> tuple[list[Chain], dict[int, tuple[time, time]] | None]:
    n = draw(st.integers(1, 9))
    chains: list[Chain] = []
    for i in range(n):
        plate = draw(st.sampled_from(["P1", "P2", "P3", "*"]))
        k = draw(st.integers(1, 5))
        jobs = [
            (draw(st.sampled_from(["inc", "arm", "lh", "op"])), draw(st.integers(0, 900)))
            for _ in range(k)
        ]
        ws = T0 + s(draw(st.integers(0, 30)) * 600)
        wl = draw(st.integers(0, 12)) * 600
        due = ws + s(draw(st.integers(0, wl)))
        holds: tuple[Hold, ...] = ()
        if k >= 3 and draw(st.booleans()):
            holds = (Hold("lh:deck", 1, k - 2, draw(st.sampled_from([(1,), (1, 2)]))),)
        prev = after = None
        # as resolve makes them: a tie points to an earlier chain of the same plate
        same = [c for c in chains if c.plate == plate and plate != "*" and c.due <= due]
        if same and draw(st.booleans()):
            prev = draw(st.sampled_from(same)).key
            after = float(draw(st.integers(0, 6)) * 900)
        chains.append(
            mk_chain(
                f"t{i}/{plate}",
                jobs,
                ws=ws,
                we=ws + s(wl),
                due=due,
                main=draw(st.integers(0, k - 1)),
                manual=draw(st.booleans()),
                holds=holds,
                previous=prev,
                after_s=after,
            )
        )
    hours = draw(
        st.one_of(
            st.none(),
            st.dictionaries(
                st.integers(0, 6),
                st.sampled_from([(time(7), time(19)), (time(9), time(17, 30))]),
                min_size=1,
            ),
        )
    )
    return chains, hours


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(chain_sets(), st.integers(0, 4 * 3600))
def test_schedule_invariants_hold_for_random_chains(
    data: tuple[list[Chain], dict[int, tuple[time, time]] | None], now_s: int
) -> None:
    chains, hours = data
    now = T0 + s(now_s)
    tz = "Europe/Stockholm"
    sch = schedule(chains, now=now, operators=OperatorCalendar(hours or {}, tz))
    check_invariants(chains, sch, now, hours, tz)
    # deterministic: the same input gives the same schedule
    assert schedule(chains, now=now, operators=OperatorCalendar(hours or {}, tz)) == sch


@settings(max_examples=100, deadline=None)
@given(chain_sets(), st.integers(0, 6 * 3600), st.integers(0, 1800))
def test_replanning_keeps_fixed_slots_and_invariants(
    data: tuple[list[Chain], dict[int, tuple[time, time]] | None], cut_s: int, busy_s: int
) -> None:
    chains, _hours = data
    first = schedule(chains, now=T0)
    # Time moved on to `cut`: every job that started before it is fixed, the liquid
    # handler is held up (a slow run), and the engine re-plans the rest.
    cut = T0 + s(cut_s)
    fixed = {k: sl for k, sl in first.slots.items() if sl.start < cut}
    done = {c.key: first.chains[c.key].main_start for c in chains if c.main.key in fixed}
    busy = {"lh": cut + s(busy_s)}
    again = schedule(chains, now=cut, fixed=fixed, busy_until=busy, done_at=done)
    for k, sl in fixed.items():
        assert again.slots[k] == sl
    check_invariants(chains, again, cut, fixed=fixed)
    for c in chains:
        for j in c.jobs:
            sl = again.slots[j.key]
            if j.device == "lh" and j.key not in fixed and sl.end > sl.start:
                assert sl.start >= busy["lh"]
    # a chain under way goes on with its next job as soon as the device is free
    for c in chains:
        started = [j for j in c.jobs if j.key in fixed]
        if started and len(started) < len(c.jobs):
            nxt = again.slots[c.jobs[len(started)].key]
            assert nxt.start >= max(cut, fixed[started[-1].key].end)


# --- placement ----------------------------------------------------------------------------


def test_free_workcell_starts_main_job_exactly_at_due() -> None:
    due = T0 + s(3 * 3600)
    c = feed_chain("d0-feed/P1", due)
    sch = schedule([c], now=T0)
    cp = sch.chains[c.key]
    assert cp.main_start == due and cp.slack_s == 3600 and sch.late == ()
    assert cp.start == due - s(50) and cp.end == due + s(320)
    assert [sch.slots[j.key].start for j in c.jobs] == [
        due - s(50),
        due - s(30),
        due,
        due + s(270),
        due + s(300),
    ]


def test_plates_pipeline_and_spread_around_due() -> None:
    due = T0 + s(3 * 3600)
    chains = [feed_chain(f"d0-feed/P{i}", due) for i in range(1, 4)]
    sch = schedule(chains, now=T0)
    mains = {c.plate: sch.chains[c.key].main_start for c in chains}
    # the LH runs back to back: P1 at due, then the nearest free times either side
    assert mains == {"P1": due, "P2": due - s(270), "P3": due + s(270)}
    # while P1's LH run goes on, P3 is fetched and put on the other deck slot
    p1_lh = sch.slots["d0-feed/P1/2"]
    p3_fetch = sch.slots["d0-feed/P3/0"]
    assert p1_lh.start < p3_fetch.start < p1_lh.end
    assert {sch.chains[c.key].deck_slot for c in chains} == {1, 3}
    assert sch.slots["d0-feed/P3/2"].deck_slot == sch.chains["d0-feed/P3"].deck_slot
    check_invariants(chains, sch, T0)


def test_one_deck_slot_means_no_second_plate_on_the_deck() -> None:
    due = T0 + s(3 * 3600)
    one = (Hold("inc:transfer", 0, 1), Hold("lh:deck", 1, 3, (1,)), Hold("inc:transfer", 3, 4))
    chains = [
        mk_chain(
            f"d0-feed/P{i}",
            [("inc", 20), ("arm", 30), ("lh", 270), ("arm", 30), ("inc", 20)],
            ws=due - s(3600),
            we=due + s(3600),
            due=due,
            main=2,
            holds=one,
        )
        for i in (1, 2)
    ]
    sch = schedule(chains, now=T0)
    a, b = sorted((sch.chains[c.key] for c in chains), key=lambda x: x.start)
    # The transfer station and the single deck slot force whole chains one after another.
    assert a.end <= b.start
    check_invariants(chains, sch, T0)


def test_late_chains_are_placed_after_the_window_and_listed() -> None:
    due = T0 + s(3600)
    chains = [
        mk_chain(f"task/P{i}", [("lh", 1800)], ws=due, we=due + s(600), due=due) for i in (1, 2, 3)
    ]
    sch = schedule(chains, now=T0)
    starts = sorted(sch.chains[c.key].main_start for c in chains)
    assert starts == [due, due + s(1800), due + s(3600)]
    assert sch.late == ("task/P2", "task/P3")
    assert sch.chains["task/P2"].slack_s == -1200
    assert sch.chains["task/P3"].late_reason == "devices busy for the whole window"


def test_window_already_past_is_late_and_placed_now() -> None:
    c = mk_chain("task/P1", [("lh", 60)], ws=T0, we=T0 + s(600))
    now = T0 + s(3600)
    sch = schedule([c], now=now)
    assert sch.late == ("task/P1",)
    assert sch.chains[c.key].main_start == now
    assert sch.chains[c.key].late_reason == "the window ended before now"


def test_earliest_deadline_first() -> None:
    lax = mk_chain("lax/P1", [("lh", 600)], ws=T0, we=T0 + s(7200))
    tight = mk_chain("tight/P2", [("lh", 600)], ws=T0, we=T0 + s(60))
    sch = schedule([lax, tight], now=T0)
    assert sch.chains["tight/P2"].main_start == T0
    assert sch.chains["lax/P1"].main_start == T0 + s(600)
    assert sch.late == ()


def test_previous_tie_follows_actual_time_of_previous_feed() -> None:
    d0 = T0 + s(3600)
    a = feed_chain("d0-feed/P1", d0)
    b = feed_chain("d1-feed/P1", d0 + s(86400), window_s=1800, previous="d0-feed/P1", after_s=86400)
    sch = schedule([a, b], now=T0)
    assert sch.chains[b.key].due == d0 + s(86400)
    # the day-0 feed really started 40 min late: day 1 is due 24 h after that
    actual = d0 + s(2400)
    sch2 = schedule([b], now=d0 + s(3600), done_at={a.key: actual})
    cp = sch2.chains[b.key]
    assert cp.due == actual + s(86400) == cp.main_start
    assert cp.window_start == actual + s(86400 - 1800)


def test_out_of_incubator_limit_is_reported() -> None:
    c = feed_chain("d0-feed/P1", T0 + s(3600), max_out_s=300)
    sch = schedule([c], now=T0)
    assert sch.warnings == (
        "d0-feed/P1: plate P1 is out of the incubator 5.5 min, above the 5 min allowed",
    )


def test_duplicate_keys_rejected() -> None:
    c = mk_chain("task/P1", [("lh", 60)], ws=T0, we=T0)
    with pytest.raises(PlanError, match="duplicate chain keys"):
        schedule([c, c], now=T0)


def test_chain_rebuilt_without_places_is_scheduled_like_the_original() -> None:
    # The engine rebuilds chains from its store with the API fields only (no main_seq,
    # no holds): the scheduler infers them from the ops, so the plan does not change.
    plates = ["P1", "P2", "P3"]
    res = load(EVENT_SCHEDULE)
    assert res.protocol is not None
    plan = resolve(res.protocol, plates=3, start=datetime(2027, 3, 1), timezone=STOCKHOLM)
    chains = expand(plan, plates, WorkcellRoles.simulated(plates), max_out_s=1200)
    bare = [
        Chain(
            c.key,
            c.task_key,
            c.plate,
            c.jobs,
            c.due,
            c.window_start,
            c.window_end,
            c.max_out_s,
            c.manual,
            c.after_previous_s,
            c.previous_key,
        )
        for c in chains
    ]
    now = plan.start - s(86400)
    assert schedule(bare, now=now) == schedule(chains, now=now)
    feed = chains[0]
    assert feed.holds and feed.main_seq == 2 and bare[0].main_seq == 0


def test_plates_of_different_runs_are_different_plates() -> None:
    due = T0 + s(3600)
    two_runs = [
        mk_chain("r1:t/P1", [("lh", 600)], ws=due, we=due + s(3600)),
        mk_chain("r2:t/P1", [("inc", 600)], ws=due, we=due + s(3600)),
    ]
    sch = schedule(two_runs, now=T0)
    assert {cp.main_start for cp in sch.chains.values()} == {due}
    one_run = [
        mk_chain("t1/P1", [("lh", 600)], ws=due, we=due + s(3600)),
        mk_chain("t2/P1", [("inc", 600)], ws=due, we=due + s(3600)),
    ]
    sch = schedule(one_run, now=T0)
    assert sch.chains["t2/P1"].main_start == due + s(600)  # one plate: one thing at a time


# --- operator hours -----------------------------------------------------------------------

WEEKDAYS_8_18 = {d: (time(8), time(18)) for d in range(5)}
STOCKHOLM = "Europe/Stockholm"


def local(y: int, m: int, d: int, hh: int, mm: int = 0) -> datetime:
    return datetime(y, m, d, hh, mm, tzinfo=ZoneInfo(STOCKHOLM)).astimezone(UTC)


def test_manual_chain_waits_for_operator_hours() -> None:
    # window 07:00-11:00 local on a Monday; the operator comes at 08:00
    c = mk_chain(
        "ev/P1", [("op", 600)], ws=local(2027, 3, 1, 7), we=local(2027, 3, 1, 11),
        due=local(2027, 3, 1, 7), manual=True,
    )  # fmt: skip
    sch = schedule(
        [c], now=T0 - s(86400), operators=OperatorCalendar(WEEKDAYS_8_18 or {}, STOCKHOLM)
    )
    assert sch.chains[c.key].main_start == local(2027, 3, 1, 8)
    assert sch.late == ()
    # the same chain without the manual flag ignores the hours
    auto = mk_chain("ev/P1", [("op", 600)], ws=local(2027, 3, 1, 7), we=local(2027, 3, 1, 11))
    sch = schedule(
        [auto], now=T0 - s(86400), operators=OperatorCalendar(WEEKDAYS_8_18 or {}, STOCKHOLM)
    )
    assert sch.chains[auto.key].main_start == local(2027, 3, 1, 7)


def test_each_run_follows_its_own_workcells_hours_in_that_workcells_zone() -> None:
    # Two runs' manual chains with the same all-day window; the first run was registered on
    # a workcell in Stockholm, the second on one in Tokyo, both staffed 08:00-10:00 local.
    day = datetime(2027, 3, 1, tzinfo=UTC)
    chains = [
        mk_chain(f"r{n}:ev/P1", [("op", 600)], ws=day, we=day + s(86400), manual=True)
        for n in (1, 2)
    ]
    chains = [replace(c, run=f"r{n}") for n, c in zip((1, 2), chains, strict=True)]
    hours = {d: (time(8), time(10)) for d in range(7)}
    cal = {"r1": OperatorCalendar(hours, STOCKHOLM), "r2": OperatorCalendar(hours, "Asia/Tokyo")}
    sch = schedule(chains, now=day, operators=cal)
    assert sch.late == ()
    assert sch.chains["r1:ev/P1"].main_start.astimezone(ZoneInfo(STOCKHOLM)).hour == 8
    # 00:00 UTC is 09:00 in Tokyo (16:00-18:00 there would be Stockholm's hours)
    assert sch.chains["r2:ev/P1"].main_start == day
    # Read in one zone for both, the Tokyo run would wait for Stockholm's morning.
    sch = schedule(chains, now=day, operators=cal["r1"])
    assert sch.chains["r2:ev/P1"].main_start.astimezone(ZoneInfo(STOCKHOLM)).hour in (8, 9)


def test_manual_chain_must_end_inside_hours() -> None:
    # due 17:50, 30 min long: it cannot run 17:50-18:20, so it moves back to end at 18:00
    c = mk_chain(
        "ev/P1", [("op", 1800)], ws=local(2027, 3, 1, 16), we=local(2027, 3, 1, 19),
        due=local(2027, 3, 1, 17, 50), manual=True,
    )  # fmt: skip
    sch = schedule(
        [c], now=T0 - s(86400), operators=OperatorCalendar(WEEKDAYS_8_18 or {}, STOCKHOLM)
    )
    assert sch.chains[c.key].end == local(2027, 3, 1, 18)
    assert sch.late == ()


def test_weekend_manual_chain_is_late_at_window_start() -> None:
    sat = local(2027, 3, 6, 9)
    c = mk_chain(
        "d5-replate/P1", [("op", 600)], ws=sat - s(7200), we=sat + s(7200), due=sat, manual=True
    )
    sch = schedule([c], now=T0, operators=OperatorCalendar(WEEKDAYS_8_18 or {}, STOCKHOLM))
    cp = sch.chains[c.key]
    assert sch.late == ("d5-replate/P1",)
    assert cp.late_reason == "no operator hours in the window"
    assert cp.main_start == sat - s(7200)


def test_manual_chain_with_hours_but_busy_operator_goes_after_window_inside_hours() -> None:
    mon = local(2027, 3, 1, 17)
    first = mk_chain("a/P1", [("op", 3600)], ws=mon, we=mon, manual=True)
    second = mk_chain("b/P2", [("op", 600)], ws=mon, we=mon + s(1800), due=mon, manual=True)
    sch = schedule(
        [first, second], now=T0, operators=OperatorCalendar(WEEKDAYS_8_18 or {}, STOCKHOLM)
    )
    assert sch.late == ("b/P2",)
    # the operator is busy until 18:00 and then gone: Tuesday 08:00
    assert sch.chains["b/P2"].main_start == local(2027, 3, 2, 8)


# --- whole plans --------------------------------------------------------------------------


def kriks_chains(n: int, roles: WorkcellRoles) -> tuple[list[Chain], datetime]:
    proto = load_protocol(REPO / "protocols" / "kriks2011_da.yaml")
    plan = resolve(proto, plates=n, start=datetime(2026, 12, 1), timezone=STOCKHOLM)
    plates = [f"P{i}" for i in range(1, n + 1)]
    return expand(plan, plates, roles, max_out_s=20 * 60), plan.start


def test_kriks_six_plates_on_the_simulated_workcell_has_no_late_chain() -> None:
    plates = [f"P{i}" for i in range(1, 7)]
    chains, start = kriks_chains(6, WorkcellRoles.simulated(plates))
    now = start - s(86400)
    sch = schedule(chains, now=now)
    assert sch.late == () and sch.warnings == ()
    check_invariants(chains, sch, now)
    # day 20 keeps the protocol's order for each plate: replate, feed into the new plate, seed
    for p in plates:
        rep, feed, seed = (
            sch.chains[f"d20-{t}/{p}"] for t in ("replate-0900", "feed-1030", "seed-1115")
        )
        assert rep.end <= feed.start and feed.end <= seed.start
    feed = sch.chains["d20-feed-1030/P1"]
    assert feed.main_start == local(2026, 12, 21, 10, 30)  # exactly on time when it can be


def test_kriks_fifty_plates_stays_consistent() -> None:
    plates = [f"P{i}" for i in range(1, 51)]
    roles = WorkcellRoles("ot2", "inc", "arm", "op", {p: i for i, p in enumerate(plates)}, (1, 3))
    chains, start = kriks_chains(50, roles)
    now = start - s(86400)
    sch = schedule(chains, now=now, operators=OperatorCalendar(WEEKDAYS_8_18 or {}, STOCKHOLM))
    check_invariants(chains, sch, now, WEEKDAYS_8_18, STOCKHOLM)
    # daily feeds fit (54 LH starts in the 4 h window); day 20's 40 min window does not
    late_tasks = {k.split("/")[0] for k in sch.late}
    assert "d1-feed-0900" not in late_tasks
    assert "d20-feed-1030" in late_tasks


# --- start date suggestions ---------------------------------------------------------------

EVENT_SCHEDULE = """\
media:
  - {days: "0-3", medium: M1}
factors:
  - {compound: A, conc: 1 uM, days: "0-3"}
feeds:
  - {days: "0-3", change: full}
events:
  - {days: 2, at: "13:00", kind: replate, title: Replate, instructions: do it, duration: 1 h}
"""


def test_suggest_starts_avoids_weekend_events() -> None:
    res = load(EVENT_SCHEDULE)
    assert res.protocol is not None
    proto = res.protocol
    plates = ["P1", "P2"]
    roles = WorkcellRoles("ot2", "inc", "arm", "op", {"P1": 1, "P2": 2})

    def factory(start: datetime):  # noqa: ANN202
        return resolve(proto, plates=2, start=start, timezone=STOCKHOLM)

    candidates = [datetime(2027, 3, 1) + timedelta(days=k) for k in range(7)]  # Mon..Sun
    scores = suggest_starts(
        factory, candidates, roles, OperatorCalendar(WEEKDAYS_8_18, STOCKHOLM), STOCKHOLM
    )
    assert len(scores) == 7
    by_day = {sc.start.date().isoformat(): sc for sc in scores}
    # day 2 falls on Saturday for a Thursday start, on Sunday for a Friday start
    for bad in ("2027-03-04", "2027-03-05"):
        assert by_day[bad].manual_outside == 1 and not by_day[bad].ok
        assert "Replate" in by_day[bad].reasons[0]
        assert "no operator hours in the window" in by_day[bad].reasons[0]
    assert [sc.start.date().isoformat() for sc in scores[:5]] == [
        "2027-03-01",
        "2027-03-02",
        "2027-03-03",
        "2027-03-06",
        "2027-03-07",
    ]
    assert all(sc.ok and sc.penalty == 0 for sc in scores[:5])
    assert all(len(plates) == 2 for _ in scores)


def test_suggest_starts_cli_prints_ranked_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import labctl.clock

    proto = tmp_path / "p.yaml"
    proto.write_text(protocol_text(EVENT_SCHEDULE), encoding="utf-8")
    wc = tmp_path / "wc.yaml"
    wc.write_text(
        "name: bay\ntimezone: Europe/Stockholm\ndevices:\n"
        "  ot2: {driver: opentrons, deck: {plate: 1}}\n"
        "  inc: {driver: cytomat, slots: 10}\n"
        "  arm: {driver: sim-arm}\n"
        'operators:\n  hours: {mon-fri: "08:00-18:00"}\n',
        encoding="utf-8",
    )
    # "today" is Sunday 28 Feb 2027: candidates are Mon 1 Mar to Sun 7 Mar
    monkeypatch.setattr(
        labctl.clock.RealClock, "now", lambda self: datetime(2027, 2, 28, 12, tzinfo=UTC)
    )
    args = argparse.Namespace(
        file=str(proto), plates=2, param=None, tz=None, workcell=str(wc), weeks=1
    )
    assert suggest_starts_cli(args) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0].startswith("Start dates for t with 2 plate(s) on bay")
    rows = [line for line in out if line[:4].strip().isdigit()]
    assert len(rows) == 7
    assert rows[0].split()[:3] == ["1", "Mon", "2027-03-01"]
    assert rows[0].endswith("everything fits")
    assert rows[-1].split()[:3] == ["7", "Fri", "2027-03-05"]
    assert "day 2 replate: Replate (Sun 07 Mar 13:00)" in rows[-1]

    args.workcell = None
    with pytest.raises(ParameterError, match="needs --workcell"):
        suggest_starts_cli(args)


def test_kriks_on_the_automated_example_workcell_has_starts_without_weekend_work() -> None:
    """The shipped automated workcell (an arm carries; people on weekdays only) has start
    dates where no manual work falls on a weekend and no feed is late; the same workcell
    without its arm has none (every weekend feed then needs hands)."""
    from labctl.validate import load_file
    from labctl.workcell import parse_workcell

    root = Path(__file__).resolve().parents[1]
    text = (root / "docs" / "examples" / "automated-weekdays.yaml").read_text(encoding="utf-8")
    proto = load_file(str(root / "protocols" / "kriks2011_da.yaml")).protocol
    assert proto is not None
    plates = [f"P{i}" for i in range(1, 7)]
    candidates = [datetime(2027, 3, 1) + timedelta(days=k) for k in range(14)]

    def scores(wc_text: str) -> list:  # noqa: ANN202
        wc = parse_workcell(wc_text, "wc.yaml")
        roles = WorkcellRoles.from_workcell(wc, plates)

        def factory(start: datetime):  # noqa: ANN202
            return resolve(proto, plates=6, start=start, timezone=wc.timezone)

        cal = wc.operator_calendar()
        return suggest_starts(factory, candidates, roles, cal, wc.timezone, max_out_s=20 * 60)

    automated = scores(text)
    good = [s for s in automated if s.ok]
    assert len(good) >= 4, [(s.start, s.reasons[:1]) for s in automated]
    assert all(s.feeds_late == 0 and s.manual_outside == 0 for s in good)
    by_hand = scores(text.replace("  arm:\n    driver: pf400", "  arm:\n    driver: none-x"))
    assert not any(s.ok for s in by_hand)
