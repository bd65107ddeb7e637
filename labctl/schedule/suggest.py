"""Start dates for a run, ranked by how well its schedule fits the workcell.

Each candidate day 0 is resolved, expanded and scheduled alone on the workcell; late
liquid handling and manual work outside operator hours cost most. Pure: "today" and the
candidates come from the caller (the CLI uses the real clock).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, time

from labctl.jobs import Chain, Durations, WorkcellRoles, expand, natural_key
from labctl.plan.resolve import Plan, zone
from labctl.schedule.scheduler import schedule
from labctl.workcell import OperatorCalendar


@dataclass(frozen=True)
class StartScore:
    """How good a run start is: lower ``penalty`` is better; 0 means everything fits.

    ``feeds_late``: liquid-handling chains (feeds, additions, washouts) missing their
    window; ``manual_outside``: manual tasks (events) with some plate outside operator hours
    or late; ``late``: every late chain. ``reasons`` say which tasks and why.
    """

    start: datetime
    penalty: float
    feeds_late: int
    manual_outside: int
    late: int
    reasons: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return self.penalty == 0


_LH_KINDS = ("feed", "addition", "washout")
_DEFAULT_DURATIONS = Durations()


def suggest_starts(
    plan_factory: Callable[[datetime], Plan],
    candidates: Sequence[datetime],
    roles: WorkcellRoles,
    operators: OperatorCalendar | None,
    tz: str,
    *,
    durations: Durations = _DEFAULT_DURATIONS,
    max_out_s: float | None = None,
) -> list[StartScore]:
    """Score each candidate start (resolve, expand, schedule); best first, then earliest.

    A manual task (an event such as replating) that cannot be done inside operator hours
    costs most (1000 per task), a late liquid-handling task 100 per task plus 10 per late
    plate, anything else late 10 per chain; lateness adds a minute-scale tie-breaker.
    """
    plates = sorted(roles.slots, key=natural_key)
    z = zone(tz)
    out: list[StartScore] = []
    for start in candidates:
        plan = plan_factory(start)
        chains = expand(plan, plates, roles, durations, max_out_s=max_out_s)
        if not chains:
            out.append(StartScore(plan.start, 0.0, 0, 0, 0, ()))
            continue
        now = min(c.window_start for c in chains)
        sched = schedule(chains, now=now, operators=operators)
        by_task: dict[str, list[Chain]] = {}
        for c in chains:
            if c.key in sched.late:
                by_task.setdefault(c.task_key, []).append(c)
        penalty, feeds_late, manual = 0.0, 0, 0
        reasons: list[tuple[int, datetime, str]] = []
        n_per_task: dict[str, int] = {}
        for c in chains:
            n_per_task[c.task_key] = n_per_task.get(c.task_key, 0) + 1
        for tk, cs in by_task.items():
            c0 = cs[0]
            plan0 = sched.chains[c0.key]
            mins = sum(max(0.0, -sched.chains[c.key].slack_s) for c in cs) / 60
            when = (plan0.due or c0.due).astimezone(z)
            what = f"day {c0.day} {c0.title or tk} ({when:%a %d %b %H:%M})"
            if c0.kind in _LH_KINDS:
                feeds_late += len(cs)
                penalty += 100 + 10 * len(cs)
                rank = 1
            elif c0.manual:
                manual += 1
                penalty += 1000
                rank = 0
            else:
                penalty += 10 * len(cs)
                rank = 2
            penalty += mins / 1000
            text = f"{what}: {len(cs)}/{n_per_task[tk]} plate(s) late, {plan0.late_reason}"
            reasons.append((rank, when, text))
        reasons.sort(key=lambda r: (r[0], r[1]))  # the worst first, then in time order
        out.append(
            StartScore(
                plan.start,
                round(penalty, 3),
                feeds_late,
                manual,
                len(sched.late),
                tuple(r[2] for r in reasons),
            )
        )
    out.sort(key=lambda s: (s.penalty, s.start))
    return out


_DAY_NAMES = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")


def hours_text(hours: Mapping[int, tuple[time, time]] | None) -> str:
    if not hours:
        return "always"
    return ", ".join(f"{_DAY_NAMES[d]} {a:%H:%M}-{b:%H:%M}" for d, (a, b) in sorted(hours.items()))
