"""What a batch record shows, read from the store in one snapshot: the run, the release of
its protocol text, signatures, deviations with the signature that accepted each, prompts
and their answers, the pages sent (or not) for its alarms, and the audit chain's check and
head.

Rendering (HTML for browsers, HTML for the PDF writer) is :mod:`labctl.reports.batch`;
this module only reads and links. A deviation or an answer is linked to a signature
through the command that caused it: the engine applies one queued command at a time, so
an event written between a command's 'created' and 'applied' events, by the command's
actor, is that command's doing, and the command's ``args["signature"]`` names the
signature. Where no command links them (a store written by other tools), a signature of
the run with a deviation's action, signer and reason, signed before it, is taken.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from zoneinfo import ZoneInfo

from labctl.reports.locations import PlateLocation, plate_locations
from labctl.reports.paged import PageRow, page_rows
from labctl.reports.words import answer_words, deviation_words
from labctl.store import AuditReport, Command, Event, Job, Prompt, Run, Store
from labctl.store.models import Alarm, QcValue, ReagentLot, Task
from labctl.store.users import Release, Signature

__all__ = [
    "BatchRecord",
    "ChainCheck",
    "DeviationRow",
    "PageRow",
    "PromptRow",
    "ReleaseCheck",
    "read_record",
]

# Signed actions that accept a deviation (labctl.accounts.SIGNED).
_DEVIATION_ACTIONS = ("skip", "accept-deviation", "abort", "release")
# Run states left behind by a decision on a held run, and what the decision was.
_DECISIONS = {"running": "released", "aborted": "aborted", "paused": "paused"}


@dataclass(frozen=True)
class ReleaseCheck:
    """Whether the protocol text the run used was released, by whom, and what is wrong.

    ``state``: 'released', 'practice' (a practice or dry-run database needs no release),
    'unreleased' (no release of this text), 'other-text' (this protocol version was
    released with another text). ``problems``: checks that failed (each one sentence).
    """

    state: str
    release: Release | None
    signature: Signature | None
    other: Release | None = None
    problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.state in ("released", "practice") and not self.problems


@dataclass(frozen=True)
class DeviationRow:
    """One departure from the plan: a deviation event, a hold or an abort of the run.

    ``signature``: the signature that accepted it (the skip, the abort, the release of a
    hold), None when nobody signed. For a hold, ``decision`` is the event that ended it
    (the run released, aborted or paused), None while the run is still held.
    """

    seq: int
    time: datetime
    actor: str
    what: str
    reason: str
    signature: Signature | None
    decision: Event | None = None

    @property
    def decided(self) -> str:
        """What ended a hold: 'released', 'aborted', 'paused' ('' if not a hold or open)."""
        if self.decision is None:
            return ""
        return _DECISIONS.get(str(self.decision.to_state), str(self.decision.to_state))


@dataclass(frozen=True)
class PromptRow:
    """A prompt, its answer in words, the reason given and any signature of the answer."""

    prompt: Prompt
    answer: str
    reason: str
    signature: Signature | None


@dataclass(frozen=True)
class ChainCheck:
    """The audit chain's check when the record was made, and its head (seq, hash).

    ``signature_problems``: signatures or releases whose rows no longer agree with the
    events recorded with them (Store.verify_signatures; empty when all agree).
    """

    report: AuditReport
    head: tuple[int, str] | None
    run_events: int
    signature_problems: tuple[str, ...] = ()

    @property
    def ok(self) -> bool:
        return self.report.ok and not self.signature_problems

    @property
    def head_short(self) -> str:
        """``#812 3fa4c2d19b0e``: the head's seq and the first 12 hex digits of its hash."""
        return f"#{self.head[0]} {self.head[1][:12]}" if self.head else "empty"


@dataclass(frozen=True)
class BatchRecord:
    """Everything a batch record prints, read in one snapshot of the store."""

    run: Run
    tz: ZoneInfo
    printed_at: datetime
    practice: bool
    names: dict[str, str]  # user name -> full name
    registered_by: str | None
    text_sha256: str  # the SHA-256 of the stored protocol text, computed now
    release: ReleaseCheck
    signatures: list[Signature]
    deviations: list[DeviationRow]
    prompts: list[PromptRow]
    chain: ChainCheck
    tasks: list[Task] = field(default_factory=list)
    jobs: dict[int, list[Job]] = field(default_factory=dict)  # by task id
    qc: list[QcValue] = field(default_factory=list)
    lots: list[ReagentLot] = field(default_factory=list)
    alarms: list[Alarm] = field(default_factory=list)
    locations: list[PlateLocation] = field(default_factory=list)
    pages: list[PageRow] = field(default_factory=list)

    def who(self, name: str | None) -> str:
        """``Sue Smith (sue)`` for a user, the bare name for the engine or a test actor."""
        if not name:
            return "-"
        full = self.names.get(name)
        return f"{full} ({name})" if full and full != name else name

    def footer(self) -> str:
        """The footer text of every printed page, without the page number (the renderer
        adds 'page n of m'). Built from numbers, hex digits and times only."""
        return (
            f"Run {self.run.id} · audit head {self.chain.head_short} · "
            f"printed {self.printed_at.astimezone(ZoneInfo('UTC')):%Y-%m-%d %H:%M} UTC"
        )


def read_record(store: Store, run_id: int, *, printed_at: datetime) -> BatchRecord:
    """Read the batch record of ``run_id``. ``printed_at``: wall-clock time it is made.

    Reads inside one transaction so the head printed is the head of the chain checked and
    of the rows shown (it holds the database's write lock for that long: a fraction of a
    second, as long as a check of the chain takes).
    """
    with store.atomic():
        run = store.get_run(run_id)
        events = store.events(run_id, limit=None)
        chain = ChainCheck(
            store.verify_chain(), store.head(), len(events), tuple(store.verify_signatures())
        )
        names = {u.name: u.full_name for u in store.users()}
        signatures = store.signatures(run_id)
        links = _Links(store, events, signatures)
        release = _release_check(store, run)
        if release.signature is not None:
            signatures = [release.signature, *signatures]
        tasks = store.tasks(run_id)
        jobs: dict[int, list[Job]] = {}
        for j in store.jobs(run_id):
            jobs.setdefault(j.task_id, []).append(j)
        created = [e for e in events if e.action == "created"]
        alarms = store.alarms_for_run(run_id)
        return BatchRecord(
            run=run,
            tz=ZoneInfo(run.timezone),
            printed_at=printed_at,
            practice=store.is_practice(),
            names=names,
            registered_by=next((e.actor for e in created if e.entity == "run"), None),
            text_sha256=hashlib.sha256(run.protocol_text.encode("utf-8")).hexdigest(),
            release=release,
            signatures=signatures,
            deviations=_deviations(events, links),
            prompts=[
                _prompt_row(store.get_prompt(int(e.entity_id)), events, links)
                for e in created
                if e.entity == "prompt" and e.entity_id is not None
            ],
            chain=chain,
            tasks=tasks,
            jobs=jobs,
            qc=store.qc_values(run_id),
            lots=store.reagent_lots(run_id),
            alarms=alarms,
            locations=plate_locations(store, run_id),
            pages=page_rows(store, run, events, alarms),
        )


def _release_check(store: Store, run: Run) -> ReleaseCheck:
    problems = []
    digest = hashlib.sha256(run.protocol_text.encode("utf-8")).hexdigest()
    if digest != run.protocol_sha256:
        problems.append(
            f"the stored protocol text hashes to {digest}, not to the {run.protocol_sha256} "
            "recorded for the run"
        )
    release = store.release_of(run.protocol_sha256)
    signature = None
    if release is not None:
        signature = store.get_signature(release.signature_id)
        if (release.protocol_id, release.version) != (run.protocol_id, run.protocol_version):
            problems.append(
                f"the text was released as {release.protocol_id} version {release.version}, "
                f"the run calls it {run.protocol_id} version {run.protocol_version}"
            )
        if signature.subject.get("sha256") != run.protocol_sha256:
            problems.append("the release signature does not cover this protocol text")
        state = "released"
    elif store.is_practice():
        state = "practice"
    else:
        other = store.release_for(run.protocol_id, run.protocol_version)
        return ReleaseCheck(
            "other-text" if other else "unreleased", None, None, other, tuple(problems)
        )
    return ReleaseCheck(state, release, signature, None, tuple(problems))


class _Links:
    """Which signature goes with an event: through the command being applied when it was
    written, or (failing that) a signature of the same action, signer and reason."""

    def __init__(self, store: Store, events: list[Event], signatures: list[Signature]) -> None:
        self._by_id = {s.id: s for s in signatures}
        self._signed_at = {
            int(e.entity_id): e.seq
            for e in events
            if e.entity == "signature" and e.action == "signed" and e.entity_id is not None
        }
        opened: dict[int, int] = {}
        settled: dict[int, int] = {}
        for e in events:
            if e.entity != "command" or e.entity_id is None:
                continue
            if e.action == "created":
                opened[int(e.entity_id)] = e.seq
            elif e.to_state in ("applied", "rejected"):
                settled[int(e.entity_id)] = e.seq
        # (created seq, settled seq, command), in the order the engine applied them.
        self._windows: list[tuple[int, int, Command]] = sorted(
            (opened[cid], settled[cid], store.get_command(cid)) for cid in settled if cid in opened
        )
        self._used: set[int] = set()

    def command_at(self, seq: int) -> Command | None:
        """The command being applied when event ``seq`` was written (None: none was)."""
        live = [(end, cmd) for start, end, cmd in self._windows if start < seq < end]
        return min(live, key=lambda x: x[0])[1] if live else None

    def signature(self, cmd: Command | None) -> Signature | None:
        sid = (cmd.args or {}).get("signature") if cmd is not None else None
        if not isinstance(sid, int) or isinstance(sid, bool):
            return None
        return self._by_id.get(sid)

    def for_event(self, e: Event, actions: Iterable[str] = _DEVIATION_ACTIONS) -> Signature | None:
        """The signature that went with event ``e`` (see the class text), or None."""
        cmd = self.command_at(e.seq)
        if cmd is not None and cmd.actor == e.actor:
            sig = self.signature(cmd)
            if sig is not None:
                self._used.add(sig.id)
            return sig
        wanted = set(actions)
        earlier = [
            s
            for s in self._by_id.values()
            if s.action in wanted
            and s.id not in self._used
            and s.user_name == e.actor
            and s.reason == e.reason
            and self._signed_at.get(s.id, 0) < e.seq
        ]
        if not earlier:
            return None
        sig = max(earlier, key=lambda s: self._signed_at.get(s.id, 0))
        self._used.add(sig.id)
        return sig


def _deviations(events: list[Event], links: _Links) -> list[DeviationRow]:
    rows = []
    for i, e in enumerate(events):
        if e.action == "deviation":
            rows.append(
                DeviationRow(
                    e.seq, e.time, e.actor, deviation_words(e.data), e.reason, links.for_event(e)
                )
            )
        elif e.entity == "run" and e.action == "transition" and e.to_state == "aborted":
            rows.append(
                DeviationRow(
                    e.seq, e.time, e.actor, "Run aborted", e.reason, links.for_event(e, ["abort"])
                )
            )
        elif e.entity == "run" and e.action == "transition" and e.to_state == "holding":
            end = next(
                (
                    x
                    for x in events[i + 1 :]
                    if x.entity == "run" and x.action == "transition" and x.from_state == "holding"
                ),
                None,
            )
            if end is None:
                rows.append(DeviationRow(e.seq, e.time, e.actor, "Run held", e.reason, None))
                continue
            rows.append(
                DeviationRow(
                    e.seq,
                    e.time,
                    e.actor,
                    "Run held",
                    e.reason,
                    links.for_event(end, ["release", "abort"]),
                    end,
                )
            )
    return rows


def _prompt_row(p: Prompt, events: list[Event], links: _Links) -> PromptRow:
    answered = next(
        (
            e
            for e in events
            if e.entity == "prompt" and e.entity_id == p.id and e.to_state == "answered"
        ),
        None,
    )
    signature = None
    reason = ""
    if answered is not None:
        reason = answered.reason
        cmd = links.command_at(answered.seq)
        if cmd is not None and cmd.actor == answered.actor:
            signature = links.signature(cmd)
    words = answer_words(p.answer, p.choices) if p.state == "answered" else f"({p.state})"
    return PromptRow(p, words, reason, signature)
