"""Plain sentences for a batch record: deviations, prompt answers, what a signature covers,
pages to the person on call.

The store keeps these as JSON (an event's ``data``, a prompt's ``answer``, a signature's
``subject``); a reviewer reads words, never a Python ``dict`` repr. Every function here
returns plain text: the caller escapes it for HTML.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any
from zoneinfo import ZoneInfo

__all__ = [
    "PAGE_ACTIONS",
    "answer_words",
    "channel_words",
    "deviation_words",
    "duration",
    "page_words",
    "plain",
    "subject_words",
    "when",
    "when_local",
]

# Words for the choices the engine offers (labctl.engine.prompts), shown after the choice.
CHOICE_WORDS: dict[str, str] = {
    "skip": "leave the step out (a deviation)",
    "retry": "do the step again",
    "hold": "hold the run",
    "done": "done",
    "release": "release the run and go on",
    "abort": "abort the run",
}

# How each paging channel (labctl.engine.paging) reaches a person.
CHANNEL_WORDS: dict[str, str] = {"smtp": "e-mail", "webhook": "webhook"}


def when(dt: datetime | None, tz: ZoneInfo) -> str:
    """``2026-12-01 08:00:00 UTC (09:00:00 CET)``: UTC first, then the run's zone."""
    if dt is None:
        return "-"
    utc = dt.astimezone(timezone.utc)
    local = dt.astimezone(tz)
    day = "" if local.date() == utc.date() else f"{local:%Y-%m-%d} "
    return f"{utc:%Y-%m-%d %H:%M:%S} UTC ({day}{local:%H:%M:%S} {local.tzname()})"


def when_local(dt: datetime | None, tz: ZoneInfo) -> str:
    """``2026-12-01 09:00`` in the run's zone (tables where the zone is in the heading)."""
    return dt.astimezone(tz).strftime("%Y-%m-%d %H:%M") if dt else "-"


def duration(seconds: float) -> str:
    """``45 min``, ``2 h 5 min``, ``3 d 4 h``: a span of ``seconds`` a person reads."""
    s = abs(float(seconds))
    if s < 90:
        return f"{s:.0f} s"
    minutes = round(s / 60)
    if minutes < 120:
        return f"{minutes} min"
    hours, mins = divmod(minutes, 60)
    if hours < 48:
        return f"{hours} h" + (f" {mins} min" if mins else "")
    days, hours = divmod(hours, 24)
    return f"{days} d" + (f" {hours} h" if hours else "")


def _number(value: float) -> str:
    return f"{value:g}"


def plain(value: Any) -> str:
    """Any JSON value as text: ``key: value; key: value``, lists joined with commas."""
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return _number(value)
    if isinstance(value, Mapping):
        if not value:
            return "-"
        return "; ".join(f"{str(k).replace('_', ' ')}: {plain(v)}" for k, v in value.items())
    if isinstance(value, (list, tuple)):
        return ", ".join(plain(v) for v in value) or "-"
    return str(value)


def deviation_words(data: Mapping[str, Any]) -> str:
    """What a 'deviation' event's ``data`` says happened, as one sentence."""
    kind = data.get("kind")
    rest = {k: v for k, v in data.items() if k != "kind"}
    if kind == "skipped" and "task" in data:
        return f"Task {data['task']} skipped"
    if kind == "skipped" and "job" in data:
        return f"Step '{data.get('op', '?')}' of {data['job']} skipped"
    if kind == "out_of_incubator":
        secs = data.get("seconds")
        how_long = f" for {duration(secs)}" if isinstance(secs, (int, float)) else ""
        return f"Plate out of the incubator{how_long} during {data.get('task', '?')}"
    if kind == "qc":
        value = data.get("value")
        shown = _number(value) if isinstance(value, (int, float)) else plain(value)
        return (
            f"QC value {data.get('measure', '?')} = {shown} outside its limits; "
            f"the protocol's action: {data.get('on_fail', '?')}"
        )
    if kind == "extended":
        secs = data.get("seconds")
        span = duration(secs) if isinstance(secs, (int, float)) else "?"
        return f"Rest of the run moved {span} later ({plain(data.get('tasks'))} tasks)"
    head = str(kind).replace("_", " ").capitalize() if kind else "Deviation"
    return head + (f": {plain(rest)}" if rest else "")


def _gates(choices: list[Any]) -> dict[str, Mapping[str, Any]]:
    return {str(c["measure"]): c for c in choices if isinstance(c, Mapping) and "measure" in c}


def answer_words(answer: Any, choices: list[Any]) -> str:
    """A prompt's answer as words: the choice (with what it means), QC values with their
    units and whether they pass, reagent lots, 'done'."""
    if answer is None:
        return "-"
    if not isinstance(answer, Mapping):
        return plain(answer)
    parts: list[str] = []
    choice = answer.get("choice")
    if choice is not None:
        gloss = CHOICE_WORDS.get(str(choice))
        parts.append(f"'{choice}'" + (f": {gloss}" if gloss and gloss != choice else ""))
    gates = _gates(choices)
    qc = answer.get("qc")
    if isinstance(qc, Mapping):
        for measure, value in qc.items():
            parts.append(_qc_words(str(measure), value, gates.get(str(measure), {})))
    lots = answer.get("lots")
    if isinstance(lots, Mapping):
        parts += [f"{reagent} lot {lot}" for reagent, lot in lots.items()]
    if "answer" in answer:
        parts.append(plain(answer["answer"]))
    known = {"choice", "qc", "lots", "answer", "done"}
    extra = {k: v for k, v in answer.items() if k not in known}
    if extra:
        parts.append(plain(extra))
    if not parts:
        return "done" if answer.get("done") else plain(dict(answer))
    return "; ".join(parts)


def _qc_words(measure: str, value: Any, gate: Mapping[str, Any]) -> str:
    unit = f" {gate['unit']}" if gate.get("unit") else ""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return f"{measure} = {plain(value)}{unit}"
    low, high = gate.get("min"), gate.get("max")
    verdict = ""
    if low is not None or high is not None:
        ok = (low is None or value >= low) and (high is None or value <= high)
        verdict = " (passes)" if ok else " (FAILS its limits)"
    return f"{measure} = {_number(value)}{unit}{verdict}"


def subject_words(subject: Mapping[str, Any]) -> str:
    """What a signature covers, in words (its SHA-256 is shown beside it)."""
    if "protocol" in subject and "sha256" in subject:
        return f"protocol {subject['protocol']} version {subject.get('version', '?')}"
    parts: list[str] = []
    args = subject.get("args")
    if isinstance(args, Mapping):
        for key in ("task", "plate", "prompt"):
            if args.get(key) is not None:
                parts.append(f"{key} {args[key]}")
        answer = args.get("answer")
        if answer is not None:
            parts.append(f"answer {answer_words(answer, [])}")
    if subject.get("run") is not None:
        parts.append(f"run {subject['run']}")
    return ", ".join(parts) or plain({k: v for k, v in subject.items() if k != "reason"})


def channel_words(channel: Any) -> str:
    """``e-mail`` for the 'smtp' channel, ``webhook``; an unknown name as it is."""
    return CHANNEL_WORDS.get(str(channel), str(channel or "?"))


#: The audit actions of a page to the person on call (labctl.engine.paging, all_clear):
#: delivered, the all clear after it, or a delivery that failed.
PAGE_ACTIONS = ("page-sent", "page-cleared", "page-failed")


def page_words(action: str, data: Mapping[str, Any]) -> str:
    """A 'page-sent', 'page-cleared' (the all clear after it) or 'page-failed' event's
    ``data`` (labctl.engine.paging, all_clear) as one sentence: ``Paged alice@lab.org by
    e-mail: <subject> (attempt 2)``, ``All clear sent to alice@lab.org by e-mail: <subject>``,
    ``Page to alice@lab.org by e-mail failed (attempt 3): <why>``. Missing fields read '?'."""
    how = channel_words(data.get("channel"))
    to = plain(data.get("to")) if data.get("to") else "?"
    attempt = data.get("attempt")
    counted = isinstance(attempt, int) and not isinstance(attempt, bool) and attempt > 0
    tries = f" (attempt {attempt})" if counted else ""
    if action == "page-sent":
        return f"Paged {to} by {how}: {data.get('subject') or '?'}{tries}"
    if action == "page-cleared":
        return f"All clear sent to {to} by {how}: {data.get('subject') or '?'}{tries}"
    what = "All-clear page" if data.get("all_clear") else "Page"
    return f"{what} to {to} by {how} failed{tries}: {data.get('detail') or '?'}"
