"""Operator commands: what the run controls and prompt dialogs queue for the engine, with
the reason and (for what cannot be undone) password checks, the tasks a skip may name, and
the engine's verdict on each command (applied, rejected and why, or queued)."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from labctl.errors import LabctlError
from labctl.gui.models.common import ConsoleInputError, task_key_of, task_plate, task_title
from labctl.gui.models.prompts import PromptView
from labctl.store import Store
from labctl.store.models import Command

#: Commands the operator cannot take back: they ask for the password as well as a reason.
#: Confirming a held engine's store is a supervisor's word that the devices were checked.
IRREVERSIBLE_VERBS = ("abort", "skip", "confirm-store")
#: Commands that need a reason (it goes into the audit trail).
REASON_VERBS = ("pause", "resume", "abort", "skip", "release", "confirm-store")


class PasswordRejected(LabctlError):
    """The password given to confirm an irreversible command was wrong (or none was set)."""

    code = 1102


Verifier = Callable[[str, str], bool]
"""Checks a password: ``verifier(actor, password) -> bool`` (see :mod:`labctl.gui.auth`)."""


@dataclass(frozen=True)
class CommandRequest:
    """An operator command before it is queued: what, for which run, and why."""

    verb: str
    run_id: int | None  # None: a command to the engine itself (confirm-store)
    reason: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def irreversible(self) -> bool:
        """Abort, skip (also a prompt answered with 'skip') and confirm-store cannot be
        taken back."""
        if self.verb in IRREVERSIBLE_VERBS:
            return True
        answer = self.args.get("answer") if self.verb == "answer" else None
        return isinstance(answer, dict) and answer.get("choice") in IRREVERSIBLE_VERBS

    @property
    def needs_reason(self) -> bool:
        return self.verb in REASON_VERBS or self.irreversible

    def describe(self) -> str:
        """One line for the confirmation and the status bar."""
        a = self.args
        if self.verb == "confirm-store":
            return "confirm the devices were checked (the held engine goes on)"
        plate = f" plate {a['plate']} of" if a.get("plate") else ""
        if self.verb == "skip":
            on = f" on {a['plate']}" if a.get("plate") else " on every plate"
            return f"skip task {a.get('task')}{on} of run {self.run_id}"
        if self.verb == "answer":
            ans = a.get("answer") or {}
            what = f"'{ans['choice']}'" if isinstance(ans, dict) and "choice" in ans else "done"
            return f"answer prompt {a.get('prompt')} of run {self.run_id} with {what}"
        return f"{self.verb}{plate} run {self.run_id}"


def pause(run_id: int, reason: str, plate: str | None = None) -> CommandRequest:
    return CommandRequest("pause", run_id, reason, {"plate": plate} if plate else {})


def resume(run_id: int, reason: str, plate: str | None = None) -> CommandRequest:
    return CommandRequest("resume", run_id, reason, {"plate": plate} if plate else {})


def release(run_id: int, reason: str) -> CommandRequest:
    return CommandRequest("release", run_id, reason)


def confirm_store(reason: str) -> CommandRequest:
    """A held engine goes on: a supervisor checked the devices against its database."""
    return CommandRequest("confirm-store", None, reason)


def abort(run_id: int, reason: str) -> CommandRequest:
    return CommandRequest("abort", run_id, reason)


def skip(run_id: int, task_key: str, reason: str, plate: str | None = None) -> CommandRequest:
    args: dict[str, Any] = {"task": task_key}
    if plate:
        args["plate"] = plate
    return CommandRequest("skip", run_id, reason, args)


def answer(prompt: PromptView, answer_: dict[str, Any], reason: str = "") -> CommandRequest:
    return CommandRequest("answer", prompt.run_id, reason, {"prompt": prompt.id, "answer": answer_})


def submit(
    store: Store,
    request: CommandRequest,
    *,
    actor: str,
    verifier: Verifier | None = None,
    password: str | None = None,
) -> Command:
    """Queue ``request`` for the engine, after checking its reason and, if it cannot be
    undone, the operator's password. Returns the pending command row.

    Raises ConsoleInputError (no reason) or PasswordRejected; nothing is written then.
    The password check runs here, on the worker thread: PBKDF2 takes a noticeable fraction
    of a second on purpose.
    """
    reason = request.reason.strip()
    if request.needs_reason and not reason:
        raise ConsoleInputError(
            f"give a reason to {request.describe()}: it goes into the audit trail"
        )
    if request.irreversible:
        if verifier is None:
            raise PasswordRejected("no password check is configured: the command was not sent")
        if not password or not verifier(actor, password):
            raise PasswordRejected(f"wrong password for {actor}: the command was not sent")
    return store.insert_command(
        request.verb, actor=actor, run_id=request.run_id, args=dict(request.args), reason=reason
    )


def submit_all(
    store: Store,
    requests: Sequence[CommandRequest],
    *,
    actor: str,
    verifier: Verifier | None = None,
    password: str | None = None,
) -> list[Command]:
    """Queue several commands together, all or none (e.g. answer a decision and release).

    The password is checked once, before anything is written, if any request needs it.
    """
    if any(r.irreversible for r in requests):
        if verifier is None:
            raise PasswordRejected("no password check is configured: nothing was sent")
        if not password or not verifier(actor, password):
            raise PasswordRejected(f"wrong password for {actor}: nothing was sent")

    def checked(_actor: str, _password: str) -> bool:
        return True  # checked above, once (PBKDF2 is slow on purpose)

    with store.atomic():
        return [
            submit(store, r, actor=actor, verifier=checked, password=password or "-")
            for r in requests
        ]


def acknowledge(store: Store, alarm_id: int, *, actor: str, reason: str = "") -> None:
    """Acknowledge an active alarm (it stays listed until the engine clears it)."""
    store.acknowledge_alarm(alarm_id, actor=actor, reason=reason or "seen on the console")


# --- verdicts ----------------------------------------------------------------------------------

#: What a command sent while no engine runs is told (the CLI's exit 3).
QUEUED_TEXT = "queued: no engine is running — it applies when the engine starts"
VERDICT_TONES = {"applied": "ok", "rejected": "fault", "queued": "holding", "waiting": "pending"}


@dataclass(frozen=True)
class Verdict:
    """What became of one command: ``waiting`` for a running engine, ``queued`` with no
    engine running, ``applied`` (``detail``: what it did) or ``rejected`` (``detail``: why)."""

    command_id: int
    what: str  # the command in words ("pause run 3")
    state: str
    detail: str = ""

    @property
    def final(self) -> bool:
        return self.state in ("applied", "rejected")

    @property
    def tone(self) -> str:
        return VERDICT_TONES[self.state]

    @property
    def text(self) -> str:
        """``applied``, ``rejected: why``, ``queued: ...`` (as the CLI says it)."""
        if self.state == "applied":
            return "applied" + (f" ({self.detail})" if self.detail else "")
        if self.state == "rejected":
            return f"rejected: {self.detail or 'the engine gave no reason'}"
        if self.state == "queued":
            return QUEUED_TEXT
        return "sent: waiting for the engine's verdict"

    def line(self) -> str:
        """One line naming the command and its verdict."""
        return f"command {self.command_id} · {self.what}: {self.text}"


def describe_command(cmd: Command) -> str:
    return CommandRequest(cmd.verb, cmd.run_id, cmd.reason, dict(cmd.args or {})).describe()


def _applied_text(result: Any) -> str:
    """What an applied command did, from the engine's result, in words."""
    r = result if isinstance(result, dict) else {}
    if "plate" in r and "state" in r:
        return f"plate {r['plate']} now {r['state']}"
    if "state" in r:
        return f"run now {r['state']}"
    if r.get("skipped"):
        return "skipped " + ", ".join(map(str, r["skipped"]))
    if "choice" in r:
        return f"'{r['choice']}' carried out"
    if r.get("resumed"):
        return "the engine starts work again"
    return ", ".join(
        f"{k} {v}" for k, v in r.items() if k != "answered" and not isinstance(v, (dict, list))
    )


def verdict_of(cmd: Command, *, engine_running: bool, what: str | None = None) -> Verdict:
    """The verdict on ``cmd`` as it stands (``engine_running``: whether an engine applies
    commands now, which tells a command still pending ``waiting`` from ``queued``)."""
    what = what or describe_command(cmd)
    if cmd.state == "rejected":
        why = cmd.result.get("reason") if isinstance(cmd.result, dict) else None
        return Verdict(cmd.id, what, "rejected", str(why or ""))
    if cmd.state == "applied":
        return Verdict(cmd.id, what, "applied", _applied_text(cmd.result))
    return Verdict(cmd.id, what, "waiting" if engine_running else "queued")


def run_command(store: Store, run_id: int, verb: str) -> Command | None:
    """The newest ``verb`` command of run ``run_id``, pending or settled (e.g. the start
    command queued with a new run, which an engine may apply at once)."""
    for ev in store.events(run_id, entity="command", newest_first=True, limit=200):
        if ev.entity_id is not None:
            c = store.get_command(ev.entity_id)
            if c.verb == verb:
                return c
    return None


@dataclass(frozen=True)
class SkippableTask:
    """A plan task not started on at least one plate: what the skip dialog offers."""

    task_key: str
    title: str
    day: int
    due: datetime
    plates: tuple[str, ...]
    timezone: str


def skippable_tasks(store: Store, run_id: int) -> list[SkippableTask]:
    """The run's tasks still pending on some plate, by due time (for the skip dialog)."""
    run = store.get_run(run_id)
    plates = {p.id: p.label for p in store.plates(run_id)}
    out: dict[str, SkippableTask] = {}
    for t in store.tasks(run_id, state="pending"):
        key = task_key_of(t)
        plate = task_plate(t, plates)
        if key in out:
            prev = out[key]
            out[key] = SkippableTask(
                key,
                prev.title,
                prev.day,
                min(prev.due, t.due),
                (*prev.plates, plate),
                prev.timezone,
            )
        else:
            out[key] = SkippableTask(key, task_title(t), t.day, t.due, (plate,), run.timezone)
    return sorted(out.values(), key=lambda s: (s.due, s.task_key))
