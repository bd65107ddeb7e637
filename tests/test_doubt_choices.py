"""In-doubt answers after the store went back: with an arm, the deck slot is named."""

from __future__ import annotations

from datetime import datetime, timezone

from labctl.engine.machines import JobState, TaskState
from labctl.engine.prompts import doubt_choices, doubt_meaning, doubt_options, doubt_word
from labctl.engine.records import ChainRec, JobRec
from labctl.jobs import Hold, Op

T = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)


def _chain(mover: bool, deck: tuple[int, ...] = (1, 3)) -> ChainRec:
    carrier = "mover" if mover else "operator"
    ops = [
        (Op.FETCH, "incubator"),
        (Op.TO_DECK, carrier),
        (Op.LH_RUN, "liquid_handler"),
        (Op.TO_INCUBATOR, carrier),
        (Op.STORE, "incubator"),
    ]
    jobs = [
        JobRec(
            i + 1, 1, i, "dev", op, f"r1:d1/P1/{i}", {}, 10.0, JobState.PENDING, None, None, 0, role
        )
        for i, (op, role) in enumerate(ops)
    ]
    holds = [Hold("inc:transfer", 0, 1), Hold("ot2:deck", 1, 3, deck), Hold("inc:transfer", 3, 4)]
    return ChainRec(
        1, 1, "r1:d1/P1", "d1", 1, "P1", TaskState.PENDING, T, T, T, None, False, None,
        None, None, [], main_seq=2, holds=holds, jobs=jobs,
    )  # fmt: skip


def test_by_hand_the_words_are_the_steps() -> None:
    assert doubt_choices(_chain(False)) == ["not-done", "fetched", "on-deck", "fed", "back", "done"]


def test_with_an_arm_a_plate_on_a_deck_of_two_slots_is_asked_by_slot() -> None:
    c = _chain(True)
    assert doubt_choices(c) == [
        "not-done", "fetched", "on-deck@1", "on-deck@3", "fed@1", "fed@3", "back", "done",
    ]  # fmt: skip
    upto = dict(doubt_options(c))
    assert (upto["not-done"], upto["on-deck@3"], upto["fed@1"], upto["done"]) == (-1, 1, 2, 4)
    assert doubt_word("fed@3") == ("fed", 3) and doubt_word("back") == ("back", None)
    assert (
        doubt_meaning("on-deck@3") == "the plate is on the robot's deck, not fed (deck position 3)"
    )
    # One deck slot: the place alone says where the plate is.
    assert "on-deck" in doubt_choices(_chain(True, deck=(1,)))
