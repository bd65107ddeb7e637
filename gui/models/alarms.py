"""Alarms as a person reads them: the worst first, each with its date, time and zone, in
words instead of the engine's internal keys.

The engine names a task by its chain key, ``r1:d20-feed-1030/P6`` (run 1, day 20, the feed
planned for 10:30, plate P6), and files a late task under the subject
``task r1:d20-feed-1030/P6`` with a message that starts with the key again. The console
says "day 20 feed of P6" once. Plain Python, no Qt (STYLE.md 8).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from datetime import datetime

from labctl.gui.models.common import when_text
from labctl.gui.models.devices import AlarmRow

#: Severity order, worst first; unknown severities rank after these.
SEVERITY_RANK = {"critical": 0, "alarm": 0, "error": 1, "warning": 2, "info": 3}
_SEVERITY_WORD = {"critical": "CRITICAL", "alarm": "ALARM", "error": "ALARM", "warning": "WARNING"}

_KEY = re.compile(
    r"\b(?:task\s+)?r\d+:d(-?\d+)-([A-Za-z0-9_]+(?:-[A-Za-z]+[A-Za-z0-9_]*)*)-(\d{4})"
    r"(?:/([A-Za-z0-9_]+))?"
)
_REPEAT = re.compile(r"\b(day -?\d+ [^:;,()]+? of \w+)(?:[:\s]+\1\b)+")


def _key_words(m: re.Match[str]) -> str:
    day, name, _hhmm, plate = m.group(1), m.group(2), m.group(3), m.group(4)
    what = name.replace("_", " ").replace("-", " ")
    return f"day {day} {what} of {plate}" if plate else f"day {day} {what}"


def plain_words(text: str) -> str:
    """``text`` with every task key in words (``r1:d20-feed-1030/P6`` -> ``day 20 feed of
    P6``), a key repeated right after itself said once."""
    out = _KEY.sub(_key_words, text)
    return _REPEAT.sub(r"\1", out)


def severity_rank(a: AlarmRow) -> int:
    return SEVERITY_RANK.get(a.severity, 9)


def worst_first(alarms: Iterable[AlarmRow]) -> tuple[AlarmRow, ...]:
    """Alarms by severity (worst first), then by when they were raised (the one waiting
    longest first)."""
    return tuple(sorted(alarms, key=lambda a: (severity_rank(a), a.raised_at, a.id)))


def severity_word(a: AlarmRow) -> str:
    """``"ALARM"``, ``"WARNING"``, ``"CRITICAL"`` (the severity itself, upper case, else)."""
    return _SEVERITY_WORD.get(a.severity, a.severity.upper() or "ALARM")


def subject_words(a: AlarmRow, run_names: Mapping[int, str]) -> str:
    """What the alarm is about, in words: a device's name, ``plate P4 (Kriks held)``, ``run
    'Kriks held'``, ``day 20 feed of P6 (Kriks held)``."""
    subject = plain_words(a.device or "")
    run = run_names.get(a.run_id) if a.run_id is not None else None
    if a.device and re.fullmatch(r"run \d+", a.device):
        return f"run '{run}'" if run else a.device
    if run and subject:
        return f"{subject} ({run})"
    return subject or (f"run '{run}'" if run else "workcell")


def alarm_sentence(a: AlarmRow, run_names: Mapping[int, str]) -> str:
    """The alarm's message in words, its subject named once: ``plate P4 (Kriks held) has
    been out of the incubator 20 min …``, ``inc-sim: CO2 4.1 % below …``."""
    subject = subject_words(a, run_names)
    message = plain_words(a.message)
    bare = plain_words(a.device or "")
    if bare and message.startswith(bare):
        return subject + message[len(bare) :]
    if subject and message:
        return f"{subject}: {message}"
    return subject or message


def raised_text(a: AlarmRow, tz: str, now: datetime | None = None) -> str:
    """When it was raised, with the date unless today and the zone: ``Sat 21 Nov 08:10 CET``."""
    return when_text(a.raised_at, tz, now)
