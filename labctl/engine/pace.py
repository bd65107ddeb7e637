"""How long jobs really take on this workcell, learned from the jobs it finished.

The estimates are generic (:class:`labctl.jobs.Durations`); a workcell's robot, incubator
and operators each keep their own pace, and a plan that ignores it is late at every step.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from labctl.engine.records import JobRec


class Pace:
    """Overruns (seconds; actual minus estimated) of the latest finished jobs per kind."""

    def __init__(self, learn_last: int, learn_first: int) -> None:
        """``learn_last``: how many finished jobs of a kind count; ``learn_first``: how many
        must have finished before the plan follows them (one may be a one-off)."""
        self.learn_last = learn_last
        self.learn_first = learn_first
        self._overruns: dict[tuple[str, str], list[float]] = {}  # (device, op) -> oldest first

    def relearn(self, finished: Iterable[JobRec]) -> None:
        """Forget, then learn from ``finished`` jobs in the order they finished."""
        self._overruns.clear()
        done = [j for j in finished if j.finished_at is not None and j.started_at is not None]
        for j in sorted(done, key=lambda x: (x.finished_at, x.id)):
            self.learn(j)

    def learn(self, j: JobRec) -> None:
        """Note how much longer (or shorter) than estimated a finished job took."""
        if j.started_at is None or j.finished_at is None:
            return
        took = (j.finished_at - j.started_at).total_seconds()
        seen = self._overruns.setdefault((j.device, j.op.value), [])
        seen.append(took - j.duration_s)
        del seen[: -self.learn_last]

    def planned(self, j: JobRec) -> float:
        """The job's estimate (s) corrected by the median overrun of its kind's latest jobs.

        The median ignores a one-off (an operator away for an hour, a first move that also
        initialised the device); the result is never below half the estimate.
        """
        seen = self._overruns.get((j.device, j.op.value))
        if not seen or len(seen) < self.learn_first:
            return j.duration_s
        return max(j.duration_s * 0.5, j.duration_s + statistics.median(seen))
