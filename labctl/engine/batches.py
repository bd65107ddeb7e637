"""Several plates in one robot run: the leader's LH job takes the batch's plates that are
on the deck, and each of those riders follows the leader's run to its end.

expand ties a batch's LH jobs together (the leader's ``riders``, each rider's ``rides``).
When the leader's LH job may start, the riders whose plates are on the deck (their LH job
READY) are taken: their move to RUNNING, with the op id ``ride:<leader key>``, is committed
in the same transaction as the leader's, before the robot hears of the run; the run's
parameters then name every plate's deck position (``batch``). A rider still on its way is
waited for, at most ``batch_wait_s`` (the leader's plate is out of the incubator
meanwhile); a rider not there then, or not coming (failed, paused, not begun), is fed by a
run of its own once the leader has gone. A rider whose plate is on the deck waits for its
leader the same time at most.

A riding job never talks to the robot: it ends as the leader's run ends (done, or failed:
then a person says what happened to that plate; liquid may have moved). After a restart a
riding job keeps riding: a leader the robot never received starts again with it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta

from labctl.engine.config import EngineConfig
from labctl.engine.machines import JobState, RunState, TaskState
from labctl.engine.records import FINISHED_TASK, ChainRec, JobRec, Picture

__all__ = ["RIDE", "Batches", "riding"]

RIDE = "ride:"  # op id prefix of a job that rides in another job's robot run


def riding(j: JobRec) -> str | None:
    """The key of the leader job whose run ``j`` rides in, or None."""
    return j.op_id[len(RIDE) :] if j.op_id and j.op_id.startswith(RIDE) else None


class Batches:
    """Which riders a leader takes, and when a rider stops waiting for its leader."""

    def __init__(
        self, picture: Picture, cfg: EngineConfig, planned: Callable[[ChainRec], datetime]
    ) -> None:
        """``planned``: when a chain not begun is planned to begin (the engine's plan)."""
        self.picture = picture
        self.cfg = cfg
        self.planned = planned
        self._waiting: dict[int, datetime] = {}  # job id -> when it began to wait

    def find(self, c: ChainRec, key: str) -> tuple[ChainRec, JobRec] | None:
        """The chain and job of job ``key`` in ``c``'s run (keys hold their chain's key)."""
        other = self.picture.run_of(c).chains.get(key.rsplit("/", 1)[0])
        if other is None:
            return None
        j = next((x for x in other.jobs if x.key == key), None)
        return None if j is None else (other, j)

    def may_begin(self, c: ChainRec, taken: Callable[[str, int], bool]) -> bool:
        """Whether chain ``c`` may begin now as far as its batch goes: a rider only once its
        leader has begun (or will not: then it goes alone), a leader only when every
        rider's deck position is free (``taken(place, position)``), so that two batches
        never each hold one position the other needs."""
        lh = next((j for j in c.jobs if j.seq == c.main_seq), None)
        if lh is None:
            return True
        lead_key = lh.params.get("rides")
        if isinstance(lead_key, str):
            found = self.find(c, lead_key)
            if found is None:
                return True
            lead_c, _ = found
            return lead_c.state is not TaskState.PENDING or not self._may_come(lead_c)
        if not lh.params.get("riders"):
            return True
        # Every plate of the batch still to come needs a position of its own on the deck.
        need: dict[str, set[int]] = {}  # deck place -> positions the batch may use
        count: dict[str, int] = {}
        coming = [c]
        for key in lh.params.get("riders") or []:
            found = self.find(c, str(key))
            if found is not None and found[0].state is TaskState.PENDING:
                coming.append(found[0])
        for other in coming:
            for h in other.holds:
                if h.place.endswith(":deck"):
                    need.setdefault(h.place, set()).update(h.positions)
                    count[h.place] = count.get(h.place, 0) + 1
        return all(
            sum(1 for p in positions if not taken(place, p)) >= count[place]
            for place, positions in need.items()
        )

    def _may_come(self, c: ChainRec) -> bool:
        """Whether a chain not begun may still begin (its run runs, its plate is not
        paused, nobody has to say first how far it got)."""
        return (
            c.doubt_prompt is None
            and c.plate_id not in self.picture.paused_plates
            and self.picture.run_of(c).state is RunState.RUNNING
        )

    def rider_waits(self, j: JobRec, c: ChainRec, now: datetime) -> bool:
        """Whether the LH job ``j`` (READY, plate on the deck) waits for its leader to take
        it: while the leader has not started and may still, up to ``batch_wait_s``."""
        key = j.params.get("rides")
        if not isinstance(key, str):
            return False
        found = self.find(c, key)
        if found is None:
            return False
        lead_c, lead = found
        # A leader the robot refused until a person acts (tips, waste) may start again soon.
        refused = lead.state is JobState.FAILED and lead.needs_operator is not None
        coming = (
            lead.state in (JobState.PENDING, JobState.READY) or refused
        ) and lead_c.state not in FINISHED_TASK
        return coming and self._within(j, now)

    def take(
        self, lead: JobRec, c: ChainRec, now: datetime
    ) -> list[tuple[ChainRec, JobRec]] | None:
        """The riders the leader ``lead`` takes into its run now, or None to wait for one
        still on its way (up to ``batch_wait_s``)."""
        keys = lead.params.get("riders")
        if not isinstance(keys, list) or not keys:
            return []
        taken: list[tuple[ChainRec, JobRec]] = []
        wait = False
        for key in keys:
            found = self.find(c, str(key))
            if found is None:
                continue
            rc, rj = found
            if riding(rj) == lead.key and rj.state is JobState.RUNNING:
                taken.append((rc, rj))  # it rode in a run the robot never received
            elif rj.in_doubt:
                continue  # may have been fed in time the store lost: a person says first
            elif rj.state is JobState.READY and rc.doubt_prompt is None:
                taken.append((rc, rj))
            elif self._coming(rc, rj, now):
                wait = True
        if wait and self._within(lead, now):
            return None
        self._waiting.pop(lead.id, None)
        return taken

    def _coming(self, rc: ChainRec, rj: JobRec, now: datetime) -> bool:
        """Whether the rider's plate is on its way to the deck (or about to set off)."""
        if rj.state is not JobState.PENDING or rc.doubt_prompt is not None:
            return False
        if rc.plate_id in self.picture.paused_plates:
            return False
        if self.picture.run_of(rc).state is not RunState.RUNNING:
            return False
        before = [x for x in rc.jobs if x.seq < rj.seq]
        if any(x.state in (JobState.FAILED, JobState.INTERRUPTED) for x in before):
            return False
        if rc.state is TaskState.ACTIVE:
            return True
        horizon = now + timedelta(seconds=self.cfg.batch_wait_s)
        return rc.state is TaskState.PENDING and self.planned(rc) <= horizon

    def _within(self, j: JobRec, now: datetime) -> bool:
        since = self._waiting.setdefault(j.id, now)
        return (now - since).total_seconds() < self.cfg.batch_wait_s

    def waiting(self, j: JobRec) -> bool:
        """Whether ``j`` (a leader) is waiting for a rider's plate."""
        return j.id in self._waiting

    def next_wake(self) -> datetime | None:
        """When the first wait ends (the loop looks again then)."""
        ends = [t + timedelta(seconds=self.cfg.batch_wait_s) for t in self._waiting.values()]
        return min(ends, default=None)

    def forget(self, j: JobRec) -> None:
        """``j`` has started (or ended): it waits no more."""
        self._waiting.pop(j.id, None)
