"""Standing alarms the engine raises and clears: one row per condition, raised once.

An alarm is keyed by its run (None for the workcell's own devices), its subject (a device
name, "run 3", "task r3:d2-feed-0900/P1", "plate P1", "prompt ...") and its code. Device
conditions (door open, offline, CO2 out of range, needs the operator) belong to the
workcell, not to the run that happened to be first; a late task, a held run, a plate out
too long and an unanswered prompt belong to their run. An alarm stays raised until its
cause clears.
"""

from __future__ import annotations

from labctl.engine.machines import RunState
from labctl.engine.records import FINISHED_TASK, ChainRec, Changed, RunRec
from labctl.store import Store

# No new operation goes to a device with one of these standing: offline, open, waiting for
# a person. A climate alarm alone does not stop plate moves: leaving plates out is worse.
BLOCKING_ALARMS = frozenset(
    {"door", "door-open", "offline", "unreachable", "needs-operator", "estop"}
)
# Codes the engine itself raises from jobs, which a periodic device check must not clear.
_FROM_JOBS = frozenset({"needs-operator", "late"})

Key = tuple[int | None, str, str]  # (run id or None, subject, code)


def run_subject(r: RunRec) -> str:
    return f"run {r.id}"


def task_subject(c: ChainRec) -> str:
    return f"task {c.key}"


def plate_subject(c: ChainRec) -> str:
    return f"plate {c.plate}"


def _is_device(subject: str) -> bool:
    return not subject.startswith(("run ", "task ", "plate ", "prompt "))


class Alarms:
    """The engine's standing alarms (rebuilt from the store on start)."""

    def __init__(self, store: Store, actor: str) -> None:
        self.store = store
        self.actor = actor
        self._ids: dict[Key, int] = {}
        self._sticky: set[Key] = set()  # raised by a failing poll: only a poll clears them

    def load(self) -> None:
        """The standing alarms of the store. Device alarms an older engine filed under a run
        are keyed as the workcell's, so the next device check clears them."""
        self._ids = {}
        for a in self.store.active_alarms():
            if a.device:
                run = None if _is_device(a.device) else a.run_id
                self._ids[(run, a.device, a.code)] = a.id

    def raise_(
        self, run_id: int | None, subject: str, code: str, message: str, *, sticky: bool = False
    ) -> None:
        """Raise the alarm unless it stands already (a late task is a warning, all else an
        error). ``sticky``: a device check that no longer reads it does not clear it."""
        key = (run_id, subject, code)
        if sticky:
            self._sticky.add(key)
        if key in self._ids:
            return
        a = self.store.insert_alarm(
            severity="warning" if code == "late" else "error",
            code=code,
            message=message,
            actor=self.actor,
            run_id=run_id,
            device=subject,
        )
        self._ids[key] = a.id

    def clear(self, run_id: int | None, subject: str, code: str) -> None:
        self._sticky.discard((run_id, subject, code))
        aid = self._ids.pop((run_id, subject, code), None)
        if aid is not None:
            self.store.clear_alarm(aid, actor=self.actor, reason="condition cleared")

    def standing(self, code: str) -> list[tuple[int | None, str]]:
        """(run id, subject) of every standing alarm with ``code``."""
        return [(r, s) for (r, s, c) in self._ids if c == code]

    def device_codes(self, device: str) -> set[str]:
        """Codes standing on ``device`` that a device check reads (not the engine's own, not
        those a failing poll holds raised)."""
        return {
            c
            for (r, s, c) in self._ids
            if r is None and s == device and c not in _FROM_JOBS and (r, s, c) not in self._sticky
        }

    def blocked(self, device: str) -> bool:
        """Whether a standing alarm stops new operations on ``device``."""
        return any(s == device and c in BLOCKING_ALARMS for (r, s, c) in self._ids if r is None)

    def react(self, ch: Changed) -> None:
        """A held run pages someone until it leaves HOLDING; a finished task is no longer late."""
        rec = ch.record
        if isinstance(rec, RunRec):
            if rec.state is RunState.HOLDING:
                self.raise_(
                    rec.id,
                    run_subject(rec),
                    "hold",
                    f"run {rec.id} '{rec.name}' is on hold: {ch.reason}",
                )
            else:
                self.clear(rec.id, run_subject(rec), "hold")
        elif isinstance(rec, ChainRec) and rec.state in FINISHED_TASK:
            self.clear(rec.run_id, task_subject(rec), "late")
