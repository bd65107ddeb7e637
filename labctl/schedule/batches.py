"""Batches in the schedule: the chains of plates one robot run feeds are placed as one.

Where a liquid handler feeds several plates in one run (``batch`` in the workcell), expand
makes one chain per plate as always and ties their LH jobs (``riders`` / ``rides``,
:func:`labctl.jobs.expand`). For the scheduler that is one unit: every plate is fetched and
put on the deck, the robot runs once, every plate goes back. :func:`merge` makes such a
unit of each batch whose chains have not started (one chain with the plates' jobs in that
order, the leader's LH job once, every plate's places and the plates themselves), and
:func:`split` gives every member chain its jobs' slots and its plan back, the riders' LH
jobs in the leader's slot. A batch that has begun is scheduled chain by chain (a rider
that is late for its leader's run is fed by a run of its own).

Pure functions of their inputs.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace

from labctl.jobs import Chain, Hold, JobSpec
from labctl.schedule.model import ChainPlan, Slot

__all__ = ["merge", "out_s", "split"]

Groups = dict[str, list[Chain]]  # merged chain's key (the leader's) -> member chains, leader first


def merge(chains: Sequence[Chain], started: Mapping[str, object]) -> tuple[list[Chain], Groups]:
    """``chains`` with each batch none of whose jobs is in ``started`` merged into one
    chain (keyed by its leader's key); the groups merged, by that key."""
    owner = {c.main.key: c for c in chains if c.jobs}
    groups: Groups = {}
    for c in chains:
        riders = c.main.params.get("riders") if c.jobs else None
        if not riders:
            continue
        members = [c, *(owner[k] for k in riders if k in owner)]
        if len(members) < 2 or any(j.key in started for m in members for j in m.jobs):
            continue
        groups[c.key] = members
    taken = {m.key for ms in groups.values() for m in ms}
    out = [
        _merged(groups[c.key]) if c.key in groups else c
        for c in chains
        if c.key in groups or c.key not in taken
    ]
    return out, groups


def _merged(members: list[Chain]) -> Chain:
    """One chain: each plate's steps up to the LH run in turn, the leader's LH run, then
    each plate's steps after it in turn."""
    lead = members[0]
    jobs: list[JobSpec] = []
    at: dict[tuple[int, int], int] = {}  # (member, seq) -> index in the merged chain
    for mi, m in enumerate(members):
        for j in m.jobs[: m.main_seq]:
            at[(mi, j.seq)] = len(jobs)
            jobs.append(j)
    main = len(jobs)
    jobs.append(lead.main)
    for mi, m in enumerate(members):
        at[(mi, m.main_seq)] = main
        for j in m.jobs[m.main_seq + 1 :]:
            at[(mi, j.seq)] = len(jobs)
            jobs.append(j)
    holds = tuple(
        Hold(h.place, at[(mi, h.first)], at[(mi, h.last)], h.positions)
        for mi, m in enumerate(members)
        for h in m.holds
    )
    return replace(
        lead,
        jobs=tuple(replace(j, seq=i) for i, j in enumerate(jobs)),
        main_seq=main,
        holds=holds,
        manual=any(m.manual for m in members),
        also_plates=tuple(m.plate for m in members[1:]),
    )


def split(
    slots: dict[str, Slot], plans: dict[str, ChainPlan], late: list[str], groups: Groups
) -> None:
    """Give each member of each merged batch its slots and its plan (in place): a rider's
    LH job in the leader's slot, every job on the deck at its own plate's position, every
    member late when the batch is."""
    for key, members in groups.items():
        lead_plan = plans.get(key)
        if lead_plan is None:
            continue
        main = slots[members[0].main.key]
        for m in members:
            # The position the schedule chose for this plate: its move onto the deck's
            # (the first job of its deck hold: no other plate's hold begins there).
            hold = next((h for h in m.holds if h.place.endswith(":deck")), None)
            deck = None
            if hold is not None:
                deck = slots[m.jobs[hold.first].key].deck_slot or hold.positions[0]
            mine = []
            for j in m.jobs:
                s = main if j.seq == m.main_seq else slots[j.key]
                on_deck = any(
                    h.place.endswith(":deck") and h.first <= j.seq <= h.last for h in m.holds
                )
                s = replace(s, job_key=j.key, deck_slot=deck if on_deck else s.deck_slot)
                slots[j.key] = s
                mine.append(s)
            plans[m.key] = replace(
                lead_plan,
                chain_key=m.key,
                start=min(s.start for s in mine),
                end=max(s.end for s in mine),
                deck_slot=deck,
            )
            if key in late and m.key not in late:
                late.append(m.key)


def out_s(c: Chain, slots: Mapping[str, Slot]) -> float | None:
    """Seconds ``c``'s plate is out of the incubator as scheduled (its first job's end to
    its last job's start), for a chain of a batch whose steps are spread out; None for a
    chain of fewer than three jobs."""
    if len(c.jobs) < 3 or c.jobs[0].key not in slots or c.jobs[-1].key not in slots:
        return None
    return (slots[c.jobs[-1].key].start - slots[c.jobs[0].key].end).total_seconds()
