"""Give every job a start time: main jobs inside their windows, no device used twice at once.

The algorithm is list scheduling of whole chains, earliest deadline first. A chain's jobs
run back to back, so placing a chain means choosing one start time ``t``; each job, each
place the plate occupies (deck position, transfer station, see :class:`labctl.jobs.Hold`),
the plate itself and, for manual chains, the operator's off hours are then intervals at
fixed offsets from ``t``. The chain goes to the feasible ``t`` whose main job starts
nearest to its due time (never before the window start; on a tie the earlier), found by
sliding ``t`` forward or backward past every conflicting busy interval. Because each
device, place and plate has its own timeline, plates pipeline by themselves: the
incubator fetches plate 2 while the liquid handler works on plate 1.

Chains of one plate keep their plan order (a replate before the feed into the new plate),
and a chain tied to the previous feed (``after_previous``) is due that long after the
previous chain's actual or planned main start. Chains that cannot make their window are
still placed, as early as possible, and reported in ``Schedule.late`` so the engine can
raise the alarm in time.

All times in and out are aware UTC datetimes; inside, integer microseconds (exact, fast).
Pure and deterministic: the same input gives the same schedule.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime, time, timedelta, timezone

from labctl.clock import utc
from labctl.errors import PlanError
from labctl.jobs import (
    ALL_PLATES,
    Chain,
    Hold,
    Op,
    natural_key,
)
from labctl.plan.resolve import zone
from labctl.schedule.batches import merge, split
from labctl.schedule.batches import out_s as batch_out_s
from labctl.schedule.model import ChainPlan, Schedule, Slot
from labctl.workcell import OperatorCalendar

__all__ = ["ChainPlan", "Schedule", "Slot", "schedule"]

_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)
_ONE_US = timedelta(microseconds=1)
_INF = 1 << 62  # "for ever" in microseconds
_FAR = 1 << 61  # a search that slides past this has given up
_DAY_US = 86_400_000_000
_HOURS_HORIZON_DAYS = 60  # operator hours are laid out this far past the last window


# --- timelines ----------------------------------------------------------------------------


def _us(dt: datetime) -> int:
    return (utc(dt) - _EPOCH) // _ONE_US


def _dt(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def _dur(seconds: float) -> int:
    return max(0, round(seconds * 1_000_000))


class _Timeline:
    """Busy intervals [start, end) of one resource, sorted, disjoint, touching ones merged."""

    __slots__ = ("s", "e")

    def __init__(self) -> None:
        self.s: list[int] = []
        self.e: list[int] = []

    def hit_fwd(self, a: int, b: int) -> int | None:
        """End of a busy interval overlapping [a, b), or None if [a, b) is free."""
        if a >= b:
            return None
        s, e = self.s, self.e
        i = bisect_right(s, a) - 1
        if i >= 0 and e[i] > a:
            return e[i]
        i += 1
        if i < len(s) and s[i] < b:
            return e[i]
        return None

    def hit_bwd(self, a: int, b: int) -> int | None:
        """Start of the last busy interval overlapping [a, b), or None if [a, b) is free."""
        if a >= b:
            return None
        i = bisect_left(self.s, b) - 1
        if i >= 0 and self.e[i] > a:
            return self.s[i]
        return None

    def add(self, a: int, b: int) -> None:
        if a >= b:
            return
        lo = bisect_left(self.e, a)  # first interval ending at or after a
        hi = bisect_right(self.s, b)  # intervals starting at or before b
        if lo < hi:
            a, b = min(a, self.s[lo]), max(b, self.e[hi - 1])
        self.s[lo:hi] = [a]
        self.e[lo:hi] = [b]


class _Seg:
    """An interval at [t + rs, t + re) that needs one of ``tls`` free (alternatives)."""

    __slots__ = ("tls", "rs", "re", "positions", "hold")

    def __init__(
        self,
        tls: tuple[_Timeline, ...],
        rs: int,
        re: int,
        positions: tuple[int, ...] = (),
        hold: int = -1,
    ) -> None:
        self.tls, self.rs, self.re, self.positions, self.hold = tls, rs, re, positions, hold


def _fwd(segs: Sequence[_Seg], t: int, limit: int) -> int | None:
    """The earliest t' >= t (and <= limit) at which every segment fits, else None.

    Each conflict moves t just past the busy interval that caused it; no feasible time is
    skipped, because every time in between still overlaps that interval.
    """
    n, ok, i = len(segs), 0, 0
    while ok < n:
        if t > limit:
            return None
        sg = segs[i]
        shift = None
        for tl in sg.tls:
            h = tl.hit_fwd(t + sg.rs, t + sg.re)
            if h is None:
                shift = None
                break
            shift = h if shift is None else min(shift, h)
        if shift is None:
            ok += 1
            i = (i + 1) % n
        else:
            t, ok = shift - sg.rs, 0
    return t if t <= limit else None


def _bwd(segs: Sequence[_Seg], t: int, floor: int) -> int | None:
    """The latest t' <= t (and >= floor) at which every segment fits, else None."""
    n, ok, i = len(segs), 0, 0
    while ok < n:
        if t < floor:
            return None
        sg = segs[i]
        shift = None
        for tl in sg.tls:
            h = tl.hit_bwd(t + sg.rs, t + sg.re)
            if h is None:
                shift = None
                break
            shift = h if shift is None else max(shift, h)
        if shift is None:
            ok += 1
            i = (i + 1) % n
        else:
            t, ok = shift - sg.re, 0
    return t if t >= floor else None


# --- chain preparation --------------------------------------------------------------------


def _plate_res(run: str, plate: str) -> tuple[str, str, str]:
    return ("plate", run, plate)


def _plates(c: Chain) -> list[tuple[str, str, str]]:
    """The plate timelines ``c`` occupies: its plate's, and a merged batch's others."""
    return [_plate_res(c.run, p) for p in (c.plate, *c.also_plates) if p != ALL_PLATES]


def _deck_device(place: str) -> str | None:
    return place[: -len(":deck")] if place.endswith(":deck") else None


@dataclass
class _Prep:
    chain: Chain
    idx: int
    offs: list[int]
    durs: list[int]
    total: int
    main_off: int
    segs: list[_Seg]  # jobs, holds and plate (not operator hours)
    due: int
    ws: int
    we: int


class _State:
    def __init__(self) -> None:
        self.tl: dict[tuple, _Timeline] = {}

    def get(self, key: tuple) -> _Timeline:
        t = self.tl.get(key)
        if t is None:
            t = self.tl[key] = _Timeline()
        return t


def _normalise(c: Chain) -> Chain:
    """A chain rebuilt from storage may lack its run, main job and places: infer them.

    The main job is the LH run (or the setpoint); the plate holds the deck from TO_DECK to
    TO_INCUBATOR and the incubator's transfer station around FETCH and STORE, exactly as
    :func:`labctl.jobs.expand` makes them.
    """
    head = c.key.rsplit("/", 1)[0]
    if not c.run and ":" in head:  # "r7:d3-feed-0900/P2": the plate belongs to run r7
        c = replace(c, run=head.split(":", 1)[0])
    if c.holds or len(c.jobs) < 2:
        return c
    ops = [j.op for j in c.jobs]
    steps = [j.params.get("step") for j in c.jobs]
    main = c.main_seq
    if main == 0 and ops[0] not in (Op.LH_RUN, Op.SETPOINT):
        main = next((k for k, o in enumerate(ops) if o in (Op.LH_RUN, Op.SETPOINT)), 0)
    to_deck = next(
        (k for k in range(len(ops)) if ops[k] is Op.TO_DECK or steps[k] == "to_deck"), None
    )
    back = next(
        (k for k in range(len(ops)) if ops[k] is Op.TO_INCUBATOR or steps[k] == "to_incubator"),
        None,
    )
    holds: list[Hold] = []
    carry = next((k for k in range(len(ops)) if ops[k] is Op.CARRY or steps[k] == "carry"), None)
    if (
        carry is not None and 0 < carry < len(ops) - 1
    ):  # FETCH, CARRY, STORE: incubator to incubator
        main = carry
        holds.append(Hold(f"{c.jobs[carry - 1].device}:transfer", carry - 1, carry))
        holds.append(Hold(f"{c.jobs[carry + 1].device}:transfer", carry, carry + 1))
    elif to_deck is not None and back is not None and to_deck <= back:
        p = c.jobs[to_deck].params
        lh = p.get("liquid_handler") or next(
            (j.device for j in c.jobs if j.op is Op.LH_RUN), "liquid-handler"
        )
        positions = tuple(p.get("deck_positions") or [p.get("deck_slot", 1)])
        holds.append(Hold(f"{lh}:deck", to_deck, back, positions))
        if to_deck > 0 and ops[to_deck - 1] is Op.FETCH:
            inc = c.jobs[to_deck - 1].device
            holds.insert(0, Hold(f"{inc}:transfer", to_deck - 1, to_deck))
        if back + 1 < len(ops) and ops[back + 1] is Op.STORE:
            holds.append(Hold(f"{c.jobs[back + 1].device}:transfer", back, back + 1))
    if main == c.main_seq and not holds:
        return c
    return replace(c, main_seq=main, holds=tuple(holds))


def _prep(c: Chain, idx: int, st: _State) -> _Prep:
    durs = [_dur(j.duration_s) for j in c.jobs]
    offs, acc = [], 0
    for d in durs:
        offs.append(acc)
        acc += d
    segs = [
        _Seg((st.get(("dev", j.device)),), offs[k], offs[k] + durs[k]) for k, j in enumerate(c.jobs)
    ]
    for h_i, h in enumerate(c.holds):
        tls = tuple(st.get(("place", h.place, p)) for p in h.positions)
        segs.append(_Seg(tls, offs[h.first], offs[h.last] + durs[h.last], h.positions, h_i))
    for res in _plates(c):
        segs.append(_Seg((st.get(res),), 0, acc))
    main_off = offs[c.main_seq] if c.jobs else 0
    return _Prep(
        c, idx, offs, durs, acc, main_off, segs, _us(c.due), _us(c.window_start), _us(c.window_end)
    )


def _commit(p: _Prep, t: int, segs: Sequence[_Seg]) -> dict[int, int]:
    """Mark the chain's intervals busy at start ``t``; returns hold index -> chosen position."""
    chosen: dict[int, int] = {}
    for sg in segs:
        a, b = t + sg.rs, t + sg.re
        for k, tl in enumerate(sg.tls):
            if tl.hit_fwd(a, b) is None or k == len(sg.tls) - 1:
                tl.add(a, b)
                if sg.hold >= 0:
                    chosen[sg.hold] = sg.positions[k]
                break
    return chosen


def _job_slots(
    p: _Prep, t: int, chosen: dict[int, int], skip: Mapping[int, Slot] | None = None
) -> list[Slot]:
    out = []
    c = p.chain
    for k, j in enumerate(c.jobs):
        if skip and k in skip:
            continue
        deck_slot = deck_dev = None
        for h_i, h in enumerate(c.holds):
            dev = _deck_device(h.place)
            if dev is not None and h.first <= k <= h.last and h_i in chosen:
                deck_slot, deck_dev = chosen[h_i], dev
        out.append(
            Slot(
                j.key,
                j.device,
                _dt(t + p.offs[k]),
                _dt(t + p.offs[k] + p.durs[k]),
                deck_slot,
                deck_dev,
            )
        )
    return out


def _deck_choice(chosen: dict[int, int], c: Chain) -> int | None:
    for h_i, h in enumerate(c.holds):
        if _deck_device(h.place) is not None and h_i in chosen:
            return chosen[h_i]
    return None


# --- operator hours -----------------------------------------------------------------------


def _off_hours(hours: Mapping[int, tuple[time, time]], tz: str, lo: int, hi: int) -> _Timeline:
    """A timeline that is busy whenever no operator is there, from ``lo`` to ``hi`` (µs).

    Hours are local wall times in ``tz`` per weekday (0 = Monday); an end not after the
    start runs past midnight. Before ``lo`` and after ``hi`` counts as off hours.
    """
    z = zone(tz)
    d0 = _dt(lo).astimezone(z).date() - timedelta(days=1)
    d1 = _dt(hi).astimezone(z).date() + timedelta(days=1)
    open_: list[tuple[int, int]] = []
    d = d0
    while d <= d1:
        h = hours.get(d.weekday())
        if h is not None:
            a, b = h
            end_day = d if b > a else d + timedelta(days=1)
            s = _us(datetime.combine(d, a, tzinfo=z))
            e = _us(datetime.combine(end_day, b, tzinfo=z))
            if e > s:
                open_.append((s, e))
        d += timedelta(days=1)
    tl = _Timeline()
    cursor = -_INF
    for s, e in sorted(open_):
        if s > cursor:
            tl.add(cursor, s)
        cursor = max(cursor, e)
    tl.add(cursor, _INF)
    return tl


def _operator_timelines(
    operators: OperatorCalendar | Mapping[str, OperatorCalendar] | None,
    chains: Sequence[Chain],
    now_us: int,
) -> dict[str, _Timeline]:
    """Off-hours timelines by run tag ("" for one calendar of every run), laid out from
    the earliest of ``now`` and the windows to well past the last window."""
    if not operators or not any(c.manual for c in chains):
        return {}
    cals = {"": operators} if isinstance(operators, OperatorCalendar) else dict(operators)
    lo = min([now_us, *(_us(c.window_start) for c in chains)])
    hi = max(_us(c.window_end) for c in chains) + _HOURS_HORIZON_DAYS * _DAY_US
    made: dict[tuple[tuple[tuple[int, tuple[time, time]], ...], str], _Timeline] = {}
    out: dict[str, _Timeline] = {}
    for run, cal in sorted(cals.items()):
        if not cal.hours:
            continue
        key = (tuple(sorted(cal.hours.items())), cal.timezone)
        if key not in made:  # runs on one workcell share one calendar: lay it out once
            made[key] = _off_hours(cal.hours, cal.timezone, lo, hi)
        out[run] = made[key]
    return out


# --- the scheduler ------------------------------------------------------------------------


def schedule(
    chains: Sequence[Chain],
    *,
    now: datetime,
    busy_until: Mapping[str, datetime] = {},  # noqa: B006 - read only
    fixed: Mapping[str, Slot] = {},  # noqa: B006 - read only
    done_at: Mapping[str, datetime] = {},  # noqa: B006 - read only
    operators: OperatorCalendar | Mapping[str, OperatorCalendar] | None = None,
) -> Schedule:
    """Plan start times for ``chains`` (of every active run together).

    - ``now``: nothing new starts earlier.
    - ``busy_until``: device name -> the time it becomes free.
    - ``fixed``: job key -> slot of jobs that have already started; they are not moved and
      their devices, places and plate stay busy. Pass a running chain in ``chains`` too:
      its remaining jobs then follow its started ones, back to back, as soon as possible.
    - ``done_at``: chain key -> actual start of its main job, for chains whose main job has
      started or finished (ties of ``after_previous`` chains are measured from it).
    - ``operators``: when a person is at the workcell; manual chains start and end inside
      those hours. One calendar for every chain, or one per run (keyed by the chains' run
      tag, "r7"; a run not in the mapping has someone always there). None or empty hours:
      an operator is always there.

    Returns every chain's plan and every job's slot (fixed ones included). Chains that
    cannot make their window are placed as early as possible after it and listed in
    ``late``; so are manual chains whose window has no operator hours at all (placed at the
    window start regardless). Raises PlanError on duplicate chain keys.
    """
    now_us = _us(now)
    st = _State()
    keys = [c.key for c in chains]
    if len(set(keys)) != len(keys):
        dup = sorted({k for k in keys if keys.count(k) > 1})
        raise PlanError(f"duplicate chain keys passed to the scheduler: {', '.join(dup[:3])}")
    chains = [_normalise(c) for c in chains]
    # A batch not yet begun is one unit: its plates' steps, one robot run (see batches).
    singles = chains
    chains, groups = merge(chains, fixed)
    by_key = {c.key: c for c in chains}

    for dev, until in sorted(busy_until.items()):
        st.get(("dev", dev)).add(-_INF, _us(until))
    slots: dict[str, Slot] = {}
    for jk in sorted(fixed):
        s = fixed[jk]
        st.get(("dev", s.device)).add(_us(s.start), _us(s.end))
        slots[jk] = s
    _orphan_fixed(fixed, by_key, st)

    hours_of = _operator_timelines(operators, chains, now_us)

    plans: dict[str, ChainPlan] = {}
    late: list[str] = []
    warnings: list[str] = []
    main_at: dict[str, int] = {k: _us(v) for k, v in done_at.items()}
    end_at: dict[str, int] = {}

    pinned = [c for c in chains if any(j.key in fixed for j in c.jobs)]
    for c in pinned:
        _place_pinned(c, st, fixed, now_us, slots, plans, late, main_at, end_at, done_at)

    preps = [_prep(c, i, st) for i, c in enumerate(chains) if c.key not in plans]
    _place_all(
        preps,
        st,
        now_us,
        hours_of,
        slots,
        plans,
        late,
        main_at,
        end_at,
        done_at,
        {c.key: c for c in pinned},
    )

    split(slots, plans, late, groups)
    batched = {m.key for ms in groups.values() for m in ms}
    for c in singles:
        lim = c.max_out_s
        out = batch_out_s(c, slots) if c.key in batched else c.out_s()
        if lim is not None and out is not None and out > lim + 1e-6:
            warnings.append(
                f"{c.key}: plate {c.plate} is out of the incubator {out / 60:.1f} min, "
                f"above the {lim / 60:g} min allowed"
            )
    order = {k: i for i, k in enumerate(keys)}
    late_sorted = tuple(sorted(set(late), key=lambda k: order[k]))
    return Schedule(
        {k: slots[k] for k in sorted(slots)},
        {k: plans[k] for k in keys if k in plans},
        late_sorted,
        tuple(warnings),
    )


def _orphan_fixed(fixed: Mapping[str, Slot], by_key: Mapping[str, Chain], st: _State) -> None:
    """Started jobs of chains not passed in: keep their plate and deck position busy too."""
    groups: dict[str, list[Slot]] = {}
    for jk, s in fixed.items():
        ck = jk.rsplit("/", 1)[0]
        if ck not in by_key and "/" in ck:
            groups.setdefault(ck, []).append(s)
    for ck in sorted(groups):
        ss = groups[ck]
        head, plate = ck.rsplit("/", 1)
        run = head.split(":", 1)[0] if ":" in head else ""
        if plate != ALL_PLATES:
            a = min(_us(s.start) for s in ss)
            b = max(_us(s.end) for s in ss)
            st.get(_plate_res(run, plate)).add(a, b)
        deck = [s for s in ss if s.deck_slot is not None and s.deck_device]
        if deck:
            a = min(_us(s.start) for s in deck)
            b = max(_us(s.end) for s in deck)
            st.get(("place", f"{deck[0].deck_device}:deck", deck[0].deck_slot)).add(a, b)


def _effective(
    p: _Prep, main_at: Mapping[str, int], done_at: Mapping[str, datetime]
) -> tuple[int, int, int]:
    """(due, window start, window end) in µs, moved with the previous feed for tied chains."""
    c = p.chain
    due, ws, we = p.due, p.ws, p.we
    if c.previous_key is not None and c.after_previous_s is not None:
        base = main_at.get(c.previous_key)
        if base is not None:
            shift = base + _dur(c.after_previous_s) - due
            due, ws, we = due + shift, ws + shift, we + shift
    return due, ws, we


def _place_pinned(
    c: Chain,
    st: _State,
    fixed: Mapping[str, Slot],
    now_us: int,
    slots: dict[str, Slot],
    plans: dict[str, ChainPlan],
    late: list[str],
    main_at: dict[str, int],
    end_at: dict[str, int],
    done_at: Mapping[str, datetime],
) -> None:
    """A chain under way: started jobs stay; the rest follow back to back, as soon as possible."""
    p = _prep(c, -1, _State())  # offsets only; timelines are built below
    started = {j.seq: fixed[j.key] for j in c.jobs if j.key in fixed}
    k = max(started) + 1
    first_us = min(_us(s.start) for s in started.values())
    last_end = max(_us(s.end) for s in started.values())
    base = p.offs[k] if k < len(c.jobs) else p.total
    segs: list[_Seg] = []
    pre: list[tuple[int, int]] = []  # (segment index, busy-from) for places held since before t
    for j in c.jobs[k:]:
        segs.append(
            _Seg(
                (st.get(("dev", j.device)),),
                p.offs[j.seq] - base,
                p.offs[j.seq] + p.durs[j.seq] - base,
            )
        )
    for h_i, h in enumerate(c.holds):
        known = [started[s].deck_slot for s in range(h.first, h.last + 1) if s in started]
        positions = tuple(x for x in known if x is not None)[:1] or h.positions
        tls = tuple(st.get(("place", h.place, pos)) for pos in positions)
        if h.last < k:  # fully in the past: keep it busy where it was
            a = _us(started[h.first].start) if h.first in started else first_us
            b = _us(started[h.last].end) if h.last in started else last_end
            tls[0].add(a, b)
            continue
        rs = max(0, p.offs[h.first] - base)
        segs.append(_Seg(tls, rs, p.offs[h.last] + p.durs[h.last] - base, positions, h_i))
        if h.first < k:
            a = _us(started[h.first].start) if h.first in started else first_us
            pre.append((len(segs) - 1, a))
    plate_tl = st.get(_plate_res(c.run, c.plate)) if c.plate != ALL_PLATES else None
    if plate_tl is not None:
        segs.append(_Seg((plate_tl,), 0, p.total - base))
    chosen: dict[int, int] = {}
    t = last_end
    if k < len(c.jobs):
        found = _fwd(segs, max(now_us, last_end), _FAR)
        t = found if found is not None else max(now_us, last_end)
        chosen = _commit(p, t, segs)
        for si, a in pre:
            sg = segs[si]
            pos = chosen.get(sg.hold, sg.positions[0] if sg.positions else None)
            idx = sg.positions.index(pos) if pos in sg.positions else 0
            sg.tls[idx].add(a, t + sg.re)
    if plate_tl is not None:
        plate_tl.add(first_us, t + p.total - base)
    for h_i, h in enumerate(c.holds):
        if h_i not in chosen:
            known = [started[s].deck_slot for s in range(h.first, h.last + 1) if s in started]
            if known and known[0] is not None:
                chosen[h_i] = known[0]
    t0 = t - base  # where the chain would have started, for the offsets of the rest
    for s in _job_slots(p, t0, chosen, skip=started):
        slots[s.job_key] = s
    main_us = _us(started[c.main_seq].start) if c.main_seq in started else t0 + p.offs[c.main_seq]
    end_us = max(last_end, t0 + p.total)
    due, ws, we = _effective(p, main_at, done_at)
    reason = ""
    if main_us > we and c.main_seq not in started:
        late.append(c.key)
        reason = "the chain is under way and its main job cannot start before the window ends"
    if c.key not in done_at:
        main_at[c.key] = main_us
    end_at[c.key] = end_us
    plans[c.key] = ChainPlan(
        c.key,
        _dt(first_us),
        _dt(end_us),
        _dt(main_us),
        (we - main_us) / 1e6,
        _dt(due),
        _dt(ws),
        _dt(we),
        reason,
        _deck_choice(chosen, c),
    )


def _place_all(
    preps: list[_Prep],
    st: _State,
    now_us: int,
    hours_of: Mapping[str, _Timeline],
    slots: dict[str, Slot],
    plans: dict[str, ChainPlan],
    late: list[str],
    main_at: dict[str, int],
    end_at: dict[str, int],
    done_at: Mapping[str, datetime],
    pinned_chains: Mapping[str, Chain],
) -> None:
    """Earliest deadline first over the chains whose predecessors are placed."""
    n = len(preps)
    pos = {p.chain.key: i for i, p in enumerate(preps)}
    # Chains of one plate keep their plan order; a tied chain waits for its previous one.
    by_plate: dict[tuple, list[int]] = {}
    for i, p in enumerate(preps):
        for res in _plates(p.chain):
            by_plate.setdefault(res, []).append(i)
    preds: list[set[int]] = [set() for _ in range(n)]
    plate_preds: list[list[int]] = [[] for _ in range(n)]
    for idxs in by_plate.values():
        idxs.sort(key=lambda i: (preps[i].due, preps[i].idx))
        for a, b in zip(idxs, idxs[1:], strict=False):
            preds[b].add(a)
            plate_preds[b].append(a)
    for i, p in enumerate(preps):
        pk = p.chain.previous_key
        if pk is not None and pk in pos and pk not in done_at and pos[pk] != i:
            preds[i].add(pos[pk])
    children: list[list[int]] = [[] for _ in range(n)]
    waiting = [len(s) for s in preds]
    for i, s in enumerate(preds):
        for a in s:
            children[a].append(i)
    pinned_end: dict[tuple, int] = {}
    for k, e in end_at.items():
        c = pinned_chains.get(k)
        for res in _plates(c) if c is not None else []:
            pinned_end[res] = max(pinned_end.get(res, e), e)
    nat = [natural_key(p.chain.key) for p in preps]
    heap: list[tuple] = []
    eff: dict[int, tuple[int, int, int]] = {}

    def push(i: int) -> None:
        eff[i] = _effective(preps[i], main_at, done_at)
        due, _ws, we = eff[i]
        heapq.heappush(heap, (we, due, nat[i], preps[i].idx, i))

    for i in range(n):
        if waiting[i] == 0:
            push(i)
    placed = [False] * n
    remaining = n
    while remaining:
        if not heap:  # a tie against the plate's order (not from resolve): break it
            push(min((j for j in range(n) if not placed[j]), key=lambda j: (preps[j].due, j)))
        *_, i = heapq.heappop(heap)
        if placed[i]:
            continue
        p = preps[i]
        due, ws, we = eff[i]
        lo_t = now_us
        for res in _plates(p.chain):  # after the plate's chains that are under way
            lo_t = max(lo_t, pinned_end.get(res, lo_t))
        for pp in plate_preds[i]:
            lo_t = max(lo_t, end_at.get(preps[pp].chain.key, lo_t))
        pk = p.chain.previous_key
        if pk is not None and pk in end_at:
            lo_t = max(lo_t, end_at[pk])
        hours_tl = hours_of.get(p.chain.run, hours_of.get("")) if p.chain.manual else None
        t, reason = _place_one(p, lo_t, due, ws, we, hours_tl, now_us)
        chosen = _commit(p, t, p.segs)
        for slot in _job_slots(p, t, chosen):
            slots[slot.job_key] = slot
        main_us = t + p.main_off
        if reason:
            late.append(p.chain.key)
        main_at.setdefault(p.chain.key, main_us)
        end_at[p.chain.key] = t + p.total
        plans[p.chain.key] = ChainPlan(
            p.chain.key,
            _dt(t),
            _dt(t + p.total),
            _dt(main_us),
            (we - main_us) / 1e6,
            _dt(due),
            _dt(ws),
            _dt(we),
            reason,
            _deck_choice(chosen, p.chain),
        )
        placed[i] = True
        remaining -= 1
        for ch in children[i]:
            waiting[ch] -= 1
            if waiting[ch] == 0:
                push(ch)


def _place_one(
    p: _Prep,
    lo_t: int,
    due: int,
    ws: int,
    we: int,
    hours_tl: _Timeline | None,
    now_us: int,
) -> tuple[int, str]:
    """The chain's start time, and why it is late ("" if it is not)."""
    off = p.main_off
    lo_main = max(ws, lo_t + off)
    hours = hours_tl
    # even an instant's prompt needs someone there: the segment is at least 1 µs long
    hseg = _Seg((hours,), 0, max(1, p.total)) if hours is not None else None
    segs = [*p.segs, hseg] if hseg is not None else p.segs
    if lo_main <= we:
        if due >= lo_main:
            f = _fwd(segs, due - off, we - off)
            b = None if f == due - off else _bwd(segs, due - off, lo_main - off)
            cands = [x for x in (b, f) if x is not None]
            if cands:  # nearest to due; on a tie the earlier (b comes first)
                return min(cands, key=lambda x: abs(x - (due - off))), ""
        else:
            f = _fwd(segs, lo_main - off, we - off)
            if f is not None:
                return f, ""
    # Late: as early as possible after the window start.
    if lo_t + off > we:
        why = (
            "the window ended before now"
            if now_us + off > we
            else "the plate's previous task ends after the window"
        )
    else:
        why = "devices busy for the whole window"
    start = lo_main - off
    if hseg is not None:
        if _fwd([hseg], start, we - off) is None:
            t = _fwd(p.segs, start, _FAR)
            return _found(t, p), "no operator hours in the window"
        t = _fwd(segs, start, _FAR)
        if t is not None:
            return t, why + " (operator hours)" if why.startswith("devices") else why
        return _found(_fwd(p.segs, start, _FAR), p), "no operator hours after the window"
    return _found(_fwd(p.segs, start, _FAR), p), why


def _found(t: int | None, p: _Prep) -> int:
    if t is None:
        raise PlanError(
            f"chain {p.chain.key} cannot be placed at any time (a device busy for ever)"
        )
    return t
