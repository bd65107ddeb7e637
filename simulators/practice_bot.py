"""The practice workcell's operator: a bot that does what the run database's prompts ask,
truthfully, as a person at the console would.

It reads the open prompts (``Store.open_prompts``) and answers through the same path as a
person: an ``answer`` command queued for the engine, as ``labctl answer`` and the console
queue theirs. Before it answers a prompt that asks for a plate to be carried, it carries it
(:class:`~labctl.simulators.practice_world.PlateWorld`: the incubator's transfer station
learns that the plate left or arrived). When a person answers such a prompt first, the bot
is their hands: it carries the plate as soon as it sees their answer.

Recovery and interruption prompts get the answer the devices' own state and logs support
(:class:`~labctl.simulators.practice_evidence.Evidence`). A liquid handling that moved
liquid is never retried: ``done`` (the rest finished by hand) or, where ``done`` is not
offered, ``hold`` (then ``done``). A device asking for upkeep (new tip racks, an emptied
waste): it does it, then ``retry``.

It answers after a person's reaction time (and, for a task, the task's own duration) on
the shared clock, so a trainee at the console may answer first. What it cannot know it
leaves to a person, as it does QC decisions. Each decision (what it saw, what it did) is
written to its log file and echoed.
"""

from __future__ import annotations

import collections
import re
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from labctl.clock import Clock
from labctl.simulators.practice_evidence import (
    Evidence,
    carry_step,
    job_key,
    job_params,
    job_plate,
)
from labctl.simulators.practice_world import CannotCarry, PlateWorld
from labctl.store import Store
from labctl.store.models import Command, Job, Prompt

__all__ = ["ACTOR", "BotConfig", "OperatorBot"]

ACTOR = "sim-operator"


@dataclass(frozen=True)
class BotConfig:
    """How the bot behaves. ``reaction_s``: clock seconds from a prompt to acting on it (a
    task's own duration comes on top). ``look_every_s``: real seconds between looks at the
    database. ``answers``: False leaves every answer to people (the bot only carries the
    plates they say they carried)."""

    answers: bool = True
    reaction_s: float = 60.0
    look_every_s: float = 0.05
    retries_per_job: int = 3


class OperatorBot:
    """Answers prompts of ``store`` on ``clock``; carries plates in ``world``.

    ``robot_log`` is the robot's action log and ``robot_sync`` brings it up to date (the
    robot writes it lazily); ``robot_status(run_id)`` is the robot's own word on a run it
    still knows (None: it does not). ``log`` is the bot's decision log; ``echo`` gets each
    line too. Runs a thread between :meth:`start` and :meth:`stop`.
    """

    def __init__(
        self,
        store: Store,
        clock: Clock,
        world: PlateWorld,
        *,
        robot_log: Path,
        robot_sync: Callable[[], None],
        robot_status: Callable[[str], str | None],
        log: Path,
        config: BotConfig | None = None,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.clock = clock
        self.world = world
        self.cfg = config or BotConfig()
        self.evidence = Evidence(store, world, robot_log, robot_sync, robot_status)
        self._log = log
        self._echo = echo
        self._settled: set[int] = set()  # prompts answered or left to a person
        self._said: set[str] = set()  # lines written once
        self._mine: dict[int, int] = {}  # command id -> prompt, verdict not seen yet
        self._watch: set[int] = set()  # task prompts with a carry not yet done
        self._retries: collections.Counter[int] = collections.Counter()  # job id -> retries
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # ---- life ---------------------------------------------------------------------------

    def start(self) -> OperatorBot:
        for line in self.world.settle():
            self._say(line)
        self._thread = threading.Thread(target=self._run, name="operator-bot", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()
            self._thread = None

    def _run(self) -> None:
        while not self._stop.wait(self.cfg.look_every_s):
            try:
                self.step()
            except Exception as exc:  # noqa: BLE001 - the bot keeps going; the log says why
                self._once(f"error {type(exc).__name__}: {exc}", f"could not look: {exc}")

    # ---- one look at the database -------------------------------------------------------

    def step(self) -> None:
        """Look at the open prompts once and do what is due."""
        now = self.clock.now()
        pending = {}
        for c in self.store.pending_commands():
            if c.verb == "answer" and isinstance(c.args, dict) and "prompt" in c.args:
                pending[int(c.args["prompt"])] = c
        self._verdicts()
        prompts = self.store.open_prompts()
        for p in prompts:
            job = self.store.get_job(p.job_id) if p.job_id is not None else None
            if p.kind == "task":
                self._task(p, job, now, pending.get(p.id))
            elif p.kind in ("recovery", "interrupted"):
                self._recovery(p, job, now, pending.get(p.id))
            elif p.kind == "in-doubt":
                self._in_doubt(p, job, now, pending.get(p.id))
            else:
                self._once(f"left {p.id}", f"{_seen(p)}: a decision for a person; left open")
        for pid in sorted(self._watch - {p.id for p in prompts}):
            self._watch.discard(pid)
            p = self.store.get_prompt(pid)
            if p.state == "answered" and p.answered_by != ACTOR and p.job_id is not None:
                self._carry_for(p, self.store.get_job(p.job_id), p.answered_by or "someone")

    def _task(self, p: Prompt, job: Job | None, now: datetime, pending: Command | None) -> None:
        carry = carry_step(job)
        if carry is not None and job is not None and not self.world.carried(p.id, job_key(job)):
            self._watch.add(p.id)
            if pending is not None and pending.actor != ACTOR:
                self._carry_for(p, job, pending.actor)  # the person's hands
        if not self.cfg.answers or pending is not None or p.id in self._settled:
            return
        duration = float((job.spec or {}).get("duration_s") or 0.0) if job else 0.0
        if now < p.created_at + timedelta(seconds=self.cfg.reaction_s + duration):
            return
        said = "done"
        if carry is not None and job is not None:
            try:
                said = self.world.carry(p.id, carry, job_plate(job), job_key(job), _where(p, job))
            except CannotCarry as exc:
                home, where = self.evidence.plate_home(job)
                if not (home and self.evidence.task_fed(job)):
                    self._leave(p, f"cannot carry the plate: {exc}")
                    return
                said = f"{where} and the task's feed is done: nothing to carry"
        answer: dict[str, Any] = {"done": True}
        qc = _passing_qc(p.choices)
        if qc:
            answer["qc"] = qc
            said += "; QC " + ", ".join(f"{m} = {v:g}" for m, v in qc.items())
        self._answer(p, answer, said)

    def _carry_for(self, p: Prompt, job: Job, who: str) -> None:
        step = carry_step(job)
        if step is None or self.world.carried(p.id, job_key(job)):
            return
        try:
            said = self.world.carry(p.id, step, job_plate(job), job_key(job), _where(p, job))
        except CannotCarry as exc:
            self._once(f"carry {p.id}", f"{_seen(p)}: {who} answered; cannot carry: {exc}")
            return
        self._say(f"{_seen(p)}: {who} answered; {said}")

    def _recovery(self, p: Prompt, job: Job | None, now: datetime, pending: Command | None) -> None:
        if not self.cfg.answers or pending is not None or p.id in self._settled:
            return
        if now < p.created_at + timedelta(seconds=self.cfg.reaction_s):
            return
        choice, why = self._decide(p, job)
        if choice is None:
            if why:
                self._leave(p, why)
            return
        if choice == "done" and job is not None and job.op == "lh_run":
            why += "; " + self._finish_by_hand(p, job)
        self._answer(p, {"choice": choice}, f"{why}: answered '{choice}'")

    def _finish_by_hand(self, p: Prompt, job: Job) -> str:
        """A liquid handling answered 'done' that the robot did not finish: feed by hand the
        wells its runs did not reach (what 'done' means in the prompt)."""
        runs, slot = self.evidence.lh_runs(job)
        params = job_params(job)
        # Into the culture plate, wherever on the deck the engine put it (at its own
        # position when a run fed two plates).
        labware = str(params.get("labware", ""))
        fed = {w for r in runs for (lw, s, w) in r.fed_at if lw == labware and slot in (None, s)}
        if any(
            r.status == "succeeded" and (slot is None or any(x == slot for _, x, _ in r.fed_at))
            for r in runs
        ):
            return "the robot finished it"
        left = [str(w) for w in params.get("wells") or [] if str(w) not in fed]
        return self.world.finish_by_hand(job_key(job), job_plate(job), left, p.id)

    def _in_doubt(self, p: Prompt, job: Job | None, now: datetime, pending: Command | None) -> None:
        """A task the database (put back to an older copy) says is still to do: say how far
        it got, from the robot's log (was it fed?) and where the plate is now."""
        if not self.cfg.answers or pending is not None or p.id in self._settled or job is None:
            return
        if now < p.created_at + timedelta(seconds=self.cfg.reaction_s):
            return
        fact, seen = self.evidence.liquid_truth(job)
        if fact == "busy":
            return
        place, where = self._plate_place(job)
        fed = fact == "happened"
        if fed and place != "slot" and self.evidence.stored_since(job):
            # The plate seen out now is out for a later task: this one ended with the plate
            # stored again after its feed (the incubator's own log says so).
            place, where = "slot", f"{where}, but it was stored after this feed"
        word = {
            ("slot", True): "done",
            ("station", True): "back",
            ("deck", True): "fed",
            ("slot", False): "not-done",
            ("station", False): "fetched",
            ("deck", False): "on-deck",
        }.get((place, fed))
        words = [c for c in p.choices if isinstance(c, str)]
        if word is not None and word not in words and place == "deck":
            # With an arm the answer names the deck slot the plate sits on.
            at = self.world.deck_position(self.world.label_of(self.evidence.slot_of(job)))
            word = f"{word}@{at}"
        if word is None or word not in words:
            self._leave(p, f"{seen}; {where}: no answer says so")
            return
        said = f"{seen}; {where}"
        if fed:
            said += "; " + self._finish_by_hand(p, job)
        self._answer(p, {"choice": word}, f"{said}: answered '{word}'")

    def _plate_place(self, job: Job) -> tuple[str, str]:
        """Where ``job``'s plate is: 'slot', 'station', 'deck' or 'unknown', and in words.
        A plate left in the arm's gripper is first put back where it was picked."""
        cleared = self.world.clear_gripper()
        if cleared:
            self._say(cleared)
        home, where = self.evidence.plate_home(job)
        if home:
            return "slot", where
        if self.evidence.on_deck(job):
            return "deck", f"plate {job_plate(job)} is on the deck of {self.world.robot}"
        ts = self.world.incubator.transfer_station
        if ts is not None:
            return "station", f"{where}; plate {ts} is on the transfer station"
        return "unknown", f"{where}, and the plate is neither on the deck nor the station"

    def _decide(self, p: Prompt, job: Job | None) -> tuple[str | None, str]:
        """(choice, what was seen); choice None: wait (no reason) or leave it (a reason)."""
        words = [c for c in p.choices if isinstance(c, str)]
        if job is None:
            return None, "the prompt names no job"
        text = p.text.lower()
        tips, waste = "refill tips" in text, "empty" in text and "waste" in text
        if tips or waste:
            did = "put full tip racks in" if tips else "emptied the waste reservoir"
            if "retry" in words:
                return "retry", f"the robot asked for upkeep: {did}"
            return None, f"the robot asked for upkeep ({did}), but 'retry' is not offered"
        fact, seen = self.evidence.truth(job)
        if fact == "busy":
            return None, ""
        if fact == "happened":
            if "done" in words:
                return "done", seen
            if "hold" in words:
                return "hold", f"{seen}; 'done' is not offered, so hold (it is asked again)"
            return None, f"{seen}; no answer says so"
        if fact == "not":
            if self._retries[job.id] >= self.cfg.retries_per_job:
                return None, f"{seen}; retried {self.cfg.retries_per_job} times: a person looks"
            if "retry" in words:
                self._retries[job.id] += 1
                return "retry", seen
            if job.op == "lh_run" and "done" in words:
                # labctl never runs a liquid handling again by itself: a person feeds the
                # plate by hand and says so.
                return "done", f"{seen}; 'retry' is not offered, so the plate is fed by hand"
            return None, f"{seen}; 'retry' is not offered"
        return None, seen

    def _answer(self, p: Prompt, answer: dict[str, Any], said: str) -> None:
        cmd = self.store.insert_command(
            "answer",
            actor=ACTOR,
            run_id=p.run_id,
            args={"prompt": p.id, "answer": answer},
            reason=f"{ACTOR}: {said}",
        )
        self._settled.add(p.id)
        self._mine[cmd.id] = p.id
        self._say(f"{_seen(p)}: {said}")

    def _leave(self, p: Prompt, why: str) -> None:
        self._settled.add(p.id)
        self._say(f"{_seen(p)}: {why}; left to a person")

    def _verdicts(self) -> None:
        for cid, pid in list(self._mine.items()):
            cmd = self.store.get_command(cid)
            if cmd.state == "pending":
                continue
            del self._mine[cid]
            if cmd.state == "rejected":
                why = (cmd.result or {}).get("reason") if isinstance(cmd.result, dict) else None
                self._say(f"the engine rejected the answer to prompt {pid}: {why or 'no reason'}")

    def _once(self, key: str, text: str) -> None:
        if key not in self._said:
            self._said.add(key)
            self._say(text)

    def _say(self, text: str) -> None:
        line = f"{self.clock.now():%Y-%m-%d %H:%M:%S} {text}"
        with self._log.open("a", encoding="utf-8") as fh:
            fh.write(line + "\n")
        if self._echo is not None:
            try:
                self._echo(line)
            except OSError:  # nobody reads the terminal any more: the log file has it
                self._echo = None


def _seen(p: Prompt) -> str:
    return f"prompt {p.id} ({p.kind}) '{p.text}'"


def _where(p: Prompt, job: Job) -> str:
    """The deck position, as the prompt says it (the engine may have picked another one
    than the job's plan): 'deck slot 3 of ot2-sim'."""
    m = re.search(r"deck slot \d+ of \S+?(?=[ .]|$)", p.text)
    if m:
        return m.group(0)
    params = job_params(job)
    return str(params.get("destination" if carry_step(job) == "to_deck" else "source", ""))


def _passing_qc(choices: list[Any]) -> dict[str, float]:
    """A value inside its limits for each QC gate (what a passing measurement reads)."""
    qc = {}
    for g in choices:
        if isinstance(g, dict) and "measure" in g:
            lo, hi = g.get("min"), g.get("max")
            if lo is not None and hi is not None:
                value = (float(lo) + float(hi)) / 2
            elif lo is not None:
                value = float(lo) + 1
            elif hi is not None:
                value = float(hi) - 1
            else:
                value = 0.0
            qc[str(g["measure"])] = value
    return qc
