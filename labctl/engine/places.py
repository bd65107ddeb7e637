"""Places a plate occupies while its chain runs: deck positions, the transfer station.

A place holds one plate per position (a plate is never put down where another still is).
A chain takes its places when its first job that needs one starts (a deck position when
the chain begins, so a plate never leaves the incubator without a place to go) and gives
each back once the last job that needs it is done or skipped, or the chain ends.
"""

from __future__ import annotations

from collections.abc import Callable

from labctl.engine.machines import JobState, TaskState
from labctl.engine.records import FINISHED_JOB, FINISHED_TASK, ChainRec, Changed, JobRec, Picture
from labctl.store import Store

# The deck position the schedule chose for a chain at a place (None: no preference).
Preference = Callable[[ChainRec, str], int | None]


class Places:
    """Who holds which position of which place, rebuilt from the audit trail on start."""

    def __init__(self, store: Store, actor: str) -> None:
        self.store = store
        self.actor = actor
        self.occupied: dict[tuple[str, int], int] = {}  # (place, position) -> task id
        self.held: dict[int, dict[str, int]] = {}  # task id -> place -> position

    def rebuild(self, picture: Picture) -> None:
        """Which active chain holds which place, from the 'hold' events of the trail."""
        self.occupied.clear()
        self.held.clear()
        for run in picture.runs.values():
            chosen: dict[tuple[int, str], int] = {}
            for ev in self.store.events(run.id, action="hold", limit=None):
                chosen[(int(ev.data["task_id"]), str(ev.data["place"]))] = int(ev.data["position"])
            for c in run.chains.values():
                if c.state is not TaskState.ACTIVE:
                    continue
                for h in c.holds:
                    started = any(
                        j.seq == h.first and j.state not in (JobState.PENDING, JobState.READY)
                        for j in c.jobs
                    )
                    released = any(j.seq == h.last and j.state in FINISHED_JOB for j in c.jobs)
                    if started and not released:
                        self._take(c, h.place, chosen.get((c.task_id, h.place), h.positions[0]))

    def taken(self, place: str, position: int) -> bool:
        """Whether a chain holds ``position`` of ``place`` now."""
        return (place, position) in self.occupied

    def deck_slot(self, c: ChainRec) -> int | None:
        """The deck position the chain holds, if any."""
        for place, pos in self.held.get(c.task_id, {}).items():
            if place.endswith(":deck"):
                return pos
        return None

    def acquire(self, c: ChainRec, j: JobRec, prefer: Preference) -> bool:
        """Take every place the chain starts to hold at job ``j``; False if one is taken
        (then nothing is taken). The schedule's choice of position is used when free."""
        wanted: list[tuple[str, int]] = []
        opening = bool(c.jobs) and j.seq == c.jobs[0].seq
        held = self.held.get(c.task_id, {})
        for h in c.holds:
            # Deck positions are reserved when the chain begins, not when the plate arrives:
            # two chains can then never wait on each other's plate (deck full, transfer
            # station taken by a plate that is waiting for the deck). A chain that goes on
            # part-way (its first steps confirmed done by a person) takes what it holds then.
            reserve = opening and h.place.endswith(":deck")
            spans = h.first <= j.seq <= h.last
            if (not spans and not reserve) or h.place in held:
                continue
            free = [p for p in h.positions if (h.place, p) not in self.occupied]
            if not free:
                return False
            best = prefer(c, h.place)
            wanted.append((h.place, best if best in free else free[0]))
        for place, pos in wanted:
            self.store.record(
                "hold",
                entity="task",
                entity_id=c.task_id,
                actor=self.actor,
                reason=f"{c.plate} takes {place} position {pos}",
                data={"task_id": c.task_id, "place": place, "position": pos},
            )
            self._take(c, place, pos)
        return True

    def hold_at(self, c: ChainRec, seq: int, position: int | None = None) -> None:
        """The chain's plate is where its step ``seq`` left it (a person said so): take the
        places that step holds, at ``position`` where a person named it (on a place with
        several), else at their first position free (recorded in the trail)."""
        held = self.held.get(c.task_id, {})
        for h in c.holds:
            if not h.first <= seq < h.last or h.place in held:
                continue
            free = [p for p in h.positions if (h.place, p) not in self.occupied]
            if position is not None and position in h.positions and len(h.positions) > 1:
                free = [position]  # where the plate is, whatever the store believed
            if free:
                self.store.record(
                    "hold",
                    entity="task",
                    entity_id=c.task_id,
                    actor=self.actor,
                    reason=f"{c.plate} is on {h.place} position {free[0]}",
                    data={"task_id": c.task_id, "place": h.place, "position": free[0]},
                )
                self._take(c, h.place, free[0])

    def react(self, ch: Changed, picture: Picture) -> None:
        """Give back places after a job is done or skipped, or the chain has ended."""
        rec = ch.record
        if isinstance(rec, ChainRec) and rec.state in FINISHED_TASK:
            self._release_all(rec)
        elif (
            isinstance(rec, JobRec) and rec.state in FINISHED_JOB and rec.task_id in picture.chains
        ):
            c = picture.chains[rec.task_id]
            for h in c.holds:
                if h.last == rec.seq or c.state in FINISHED_TASK:
                    self._release(c, h.place)

    def _take(self, c: ChainRec, place: str, pos: int) -> None:
        self.held.setdefault(c.task_id, {})[place] = pos
        self.occupied[(place, pos)] = c.task_id

    def _release(self, c: ChainRec, place: str) -> None:
        pos = self.held.get(c.task_id, {}).pop(place, None)
        if pos is not None:
            self.occupied.pop((place, pos), None)

    def _release_all(self, c: ChainRec) -> None:
        for place in list(self.held.get(c.task_id, {})):
            self._release(c, place)
        self.held.pop(c.task_id, None)
