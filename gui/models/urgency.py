"""How pressing a piece of work is, said in words the operator reads at a glance.

A task has a window (it may start from ``window_start`` and must start before
``window_end``). Against the console's "now":

- ``late``: the window has ended and the work has not started: ``"LATE by 2 h 5 min"``;
- ``at-risk``: the window closes within :data:`AT_RISK_S`, or the schedule starts the work
  after it closes: ``"ends in 12 min"``;
- ``due``: the window is open: ``"due now · ends in 3 h 10 min"``;
- ``upcoming``: it opens later: ``"in 5 h 10 min"``.

Views draw ``late`` and ``at-risk`` loud (colour, symbol and these words: never colour
alone). Plain Python, no Qt (STYLE.md 8).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from labctl.gui.models.common import duration_text

#: A window closing within this many seconds puts its work at risk (30 min).
AT_RISK_S = 30 * 60.0

_SYMBOL = {"late": "⚠", "at-risk": "◷", "due": "▶", "upcoming": "", "none": ""}
#: The tone (theme colour family) each level is drawn in.
TONE = {"late": "fault", "at-risk": "holding", "due": "running", "upcoming": "", "none": ""}


@dataclass(frozen=True)
class Urgency:
    """``level`` (late, at-risk, due, upcoming, none), ``text`` in words, ``left_s`` the
    seconds to the end of the window (negative once it has passed; None: no window)."""

    level: str
    text: str
    left_s: float | None = None

    @property
    def loud(self) -> bool:
        """Late or at risk: drawn so that nobody can miss it."""
        return self.level in ("late", "at-risk")

    @property
    def tone(self) -> str:
        return TONE[self.level]

    @property
    def label(self) -> str:
        """The words with their symbol: ``"⚠ LATE by 2 h 5 min"``."""
        sym = _SYMBOL[self.level]
        return f"{sym} {self.text}" if sym and self.text else self.text


NONE = Urgency("none", "")


def urgency(
    start: datetime | None,
    window_end: datetime | None,
    now: datetime,
    *,
    expected_start: datetime | None = None,
) -> Urgency:
    """How pressing work is that may start at ``start`` and must start before
    ``window_end``, at ``now`` (all aware). ``expected_start``: when the schedule will start
    it (after ``window_end``: at risk even while the window is wide open)."""
    if window_end is None:
        if start is None:
            return NONE
        if start <= now:
            return Urgency("due", "due now")
        return Urgency("upcoming", f"in {duration_text((start - now).total_seconds())}")
    left = (window_end - now).total_seconds()
    if left < 0:
        return Urgency("late", f"LATE by {duration_text(-left)}", left)
    ends = f"ends in {duration_text(left)}"
    if left <= AT_RISK_S:
        return Urgency("at-risk", ends, left)
    if expected_start is not None and expected_start > window_end:
        late_by = duration_text((expected_start - window_end).total_seconds())
        return Urgency("at-risk", f"will start {late_by} after its window ({ends})", left)
    if start is None or start <= now:
        return Urgency("due", f"due now · {ends}", left)
    return Urgency("upcoming", f"in {duration_text((start - now).total_seconds())}", left)
