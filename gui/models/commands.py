"""Operator commands: what the run controls and prompt dialogs queue for the engine, as
the signed-in user their role allows, with the reason and (for the signed actions) the
user's electronic signature; the tasks a skip may name, and the engine's verdict on each
command (applied, rejected and why, or queued).

The permission each command needs is the CLI's (:data:`labctl.cli.operator_cmds.ACTIONS`;
an answer with 'skip' is a deviation accepted, :attr:`Action.ACCEPT_DEVIATION`), checked
against the store on the worker thread by :func:`labctl.gui.auth.authorize`."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from labctl.accounts import SIGNED, Action, Meaning
from labctl.cli.operator_cmds import ACTIONS
from labctl.errors import LabctlError
from labctl.gui.auth import ConsoleUser, authorize, sign, signature_subject
from labctl.gui.models.common import ConsoleInputError, task_key_of, task_plate, task_title
from labctl.gui.models.prompts import PromptView
from labctl.store import Store
from labctl.store.models import Command

#: Commands that cannot be taken back: shown as dangerous, and they need a reason.
#: Which of them are signed is :data:`labctl.accounts.SIGNED`'s to say (see ``signed``).
IRREVERSIBLE_VERBS = ("abort", "skip", "confirm-store")
#: Commands that need a reason (it goes into the audit trail).
REASON_VERBS = ("pause", "resume", "abort", "skip", "release", "confirm-store")


class SignatureNeeded(LabctlError):
    """A signed action was sent without the user's signature (password and meaning)."""

    code = 1102


@dataclass(frozen=True)
class Signing:
    """What the signature dialog gathered: the meaning and the password (never kept)."""

    meaning: Meaning
    password: str = field(repr=False)


@dataclass(frozen=True)
class CommandRequest:
    """An operator command before it is queued: what, for which run, and why."""

    verb: str
    run_id: int | None  # None: a command to the engine itself (confirm-store)
    reason: str = ""
    args: Mapping[str, Any] = field(default_factory=dict)

    @property
    def choice(self) -> str | None:
        """The choice of an answer (None for other commands, and for a plain 'done')."""
        answer = self.args.get("answer") if self.verb == "answer" else None
        return answer.get("choice") if isinstance(answer, dict) else None

    @property
    def irreversible(self) -> bool:
        """Abort, skip (also a prompt answered with 'skip') and confirm-store cannot be
        taken back."""
        return self.verb in IRREVERSIBLE_VERBS or self.choice in IRREVERSIBLE_VERBS

    @property
    def action(self) -> Action:
        """The permission it needs, as the CLI's command for it does."""
        if self.verb == "answer":
            return Action.ACCEPT_DEVIATION if self.choice == "skip" else Action.ANSWER
        return ACTIONS[self.verb]

    @property
    def signed(self) -> bool:
        """Whether it needs the user's electronic signature (on a database with accounts)."""
        return self.action in SIGNED

    @property
    def needs_reason(self) -> bool:
        return self.verb in REASON_VERBS or self.irreversible or self.signed

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


def choice_action(prompt: PromptView, choice: str) -> Action:
    """The permission answering ``prompt`` with ``choice`` needs, as ``labctl answer``
    takes it: a held run's decision is the run command itself (release, abort); 'skip'
    accepts a deviation; anything else is an answer."""
    if prompt.kind == "decision" and choice in ("release", "abort"):
        return ACTIONS[choice]
    return Action.ACCEPT_DEVIATION if choice == "skip" else Action.ANSWER


def _check_reason(request: CommandRequest) -> str:
    reason = request.reason.strip()
    if request.needs_reason and not reason:
        raise ConsoleInputError(
            f"give a reason to {request.describe()}: it goes into the audit trail"
        )
    return reason


def submit(
    store: Store,
    request: CommandRequest,
    *,
    who: ConsoleUser,
    now: datetime,
    signing: Signing | None = None,
) -> Command:
    """Queue ``request`` for the engine as ``who`` (see :func:`submit_all`)."""
    (cmd,) = submit_all(store, [request], who=who, now=now, signing=signing)
    return cmd


def submit_all(
    store: Store,
    requests: Sequence[CommandRequest],
    *,
    who: ConsoleUser,
    now: datetime,
    signing: Signing | None = None,
) -> list[Command]:
    """Queue several commands together, all or none, as ``who``.

    Checks, before anything is written: each reason; that ``who`` is signed in and their
    role allows each command's action on its run (:func:`labctl.gui.auth.authorize`, read
    from the store now). Then, on a database with accounts, a signed action is signed with
    ``signing`` (the password checked by the store: a wrong one never signs and counts
    towards the lock-out) and its command carries ``"signature": <id>``, as the CLI's do.
    Raises ConsoleInputError, AuthError, PermissionDenied or SignatureNeeded; no command
    is written then. Runs on the worker thread: the password check takes 50-100 ms.
    """
    reasons = [_check_reason(r) for r in requests]
    accounts = [authorize(store, who, r.action, r.run_id, now=now) for r in requests]
    to_sign = [i for i, r in enumerate(requests) if r.signed and accounts[i] is not None]
    if len(to_sign) > 1:
        raise ConsoleInputError("one signature signs one command: send them one at a time")
    args = [dict(r.args) for r in requests]
    if to_sign:
        i = to_sign[0]
        r = requests[i]
        if signing is None:
            raise SignatureNeeded(f"{r.describe()} needs your signature: nothing was sent")
        subject = signature_subject(store, r.action, r.run_id, args[i], reasons[i])
        sig = sign(
            store, who, r.action, subject, meaning=signing.meaning, password=signing.password,
            reason=reasons[i], now=now, run_id=r.run_id,
        )  # fmt: skip
        args[i] = dict(args[i], signature=sig.id)
    with store.atomic():
        return [
            store.insert_command(r.verb, actor=who.name, run_id=r.run_id, args=a, reason=why)
            for r, a, why in zip(requests, args, reasons, strict=True)
        ]


def acknowledge(
    store: Store, alarm_id: int, *, who: ConsoleUser, now: datetime, reason: str = ""
) -> None:
    """Acknowledge an active alarm as ``who`` (it stays listed until the engine clears it).
    A note on the record: :attr:`Action.ANNOTATE` (a developer's only on their own runs)."""
    authorize(store, who, Action.ANNOTATE, store.get_alarm(alarm_id).run_id, now=now)
    store.acknowledge_alarm(alarm_id, actor=who.name, reason=reason or "seen on the console")


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
