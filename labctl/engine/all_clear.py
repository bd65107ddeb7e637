"""All clear: one short page after a paged alarm stops being active.

When an alarm that a channel paged is acknowledged (someone is on it) or cleared (its
condition is gone), that channel sends one follow-up page, ``Acknowledged by sue: <subject>``
or ``Cleared: <subject>`` (``<subject>``: its last page's, by that channel), recorded as the
audit event ``page-cleared`` (entity ``page``, id the alarm's, the data of a ``page-sent``). A
delivery that fails is recorded as ``page-failed`` with ``all_clear: true`` in its data and
tried again after the pager's back-off, at most :data:`ALL_CLEAR_TRIES` times: it is good
news, not an alarm.

An acknowledgement is told at once. A clearing is told :data:`SETTLE_S` later, and only if the
condition has not come back meanwhile (a new alarm of the same run, subject and code): a
device that flaps off and on between two of the engine's checks is not "cleared", and its
new alarm is paged by the usual rules (once ``repeat_after`` has passed since the last page).

Which alarms are owed one is worked out from the store's page events, as the pages' own
repeat rules are: an engine that restarts sends the all-clear it still owed, and never one
twice. An alarm that stopped being active more than :data:`STALE_S` ago gets none (an engine
down for a day, a database restored from an old copy: the news would be stale).
"""

from __future__ import annotations

from collections.abc import Callable, Container, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta

from labctl.store import Store
from labctl.store.models import Alarm

__all__ = ["ALL_CLEAR_TRIES", "SETTLE_S", "STALE_S", "AllClears", "Owed"]

ALL_CLEAR_TRIES = 5  # tries of one all-clear by one channel before it is given up
# Seconds a cleared condition must stay away before it is called clear: longer than the
# engine's device checks (every 120 s), so a device that flaps is not called clear.
SETTLE_S = 300.0
STALE_S = 12 * 3600.0  # seconds after its alarm stopped being active: no all-clear any more
SCAN_EVENTS = 1000  # the newest page events read on start, for alarms paged not yet cleared

Key = tuple[int, str]  # (alarm id, channel name)


@dataclass(frozen=True)
class Owed:
    """An all-clear due now: of ``alarm`` (as it stands now) by ``channel``."""

    alarm: Alarm
    channel: str
    subject: str  # the subject of its last page by this channel
    sent: int  # pages of it this channel delivered
    attempt: int  # 1 for the first try of this all-clear, 2 after one failure...


@dataclass(frozen=True)
class _Owing:
    alarm: Alarm
    due: datetime | None  # None: none owed (sent already, given up, stale)
    subject: str = ""
    sent: int = 0
    failures: int = 0


class AllClears:
    """Which paged alarms each channel owes an all-clear (see the module docstring).

    ``mine``: the alarms this pager pages (the engine's or the watchdog's); ``backoff``:
    seconds before the next try after n failures in a row."""

    def __init__(
        self,
        store: Store,
        channels: Sequence[str],
        mine: Callable[[Alarm], bool],
        backoff: Callable[[int], float],
    ) -> None:
        self.store = store
        self.channels = frozenset(channels)
        self.mine = mine
        self.backoff = backoff
        # (alarm, channel) paged and not yet all-cleared: read from the store on the first
        # call, then added to as pages go out. A cache, not the truth: the events are.
        self._paged: set[Key] | None = None
        self._owing: dict[Key, _Owing] = {}  # read from the events, dropped when one is written

    def paged(self, alarm_id: int, channel: str) -> None:
        """A page of the alarm went out by ``channel`` (the pager records it now)."""
        if self._paged is not None:
            self._paged.add((alarm_id, channel))

    def forget(self, alarm_id: int, channel: str) -> None:
        """An all-clear event of it is being written: read the events again next time."""
        self._owing.pop((alarm_id, channel), None)

    def due(self, standing: Mapping[int, Alarm], now: datetime, busy: Container[Key]) -> list[Owed]:
        """The all-clears due at ``now``. ``standing``: the store's alarms not cleared, by id
        (a paged alarm still active there owes nothing yet); ``busy``: (alarm, channel) with a
        delivery under way, left for later."""
        if self._paged is None:
            self._paged = self._scan()
        out = []
        for key in sorted(self._paged):
            a = standing.get(key[0])
            if (a is not None and a.state == "active") or key in busy:
                continue
            st = self._owing.get(key)
            if st is None:
                st = self._owing[key] = self._read(a or self.store.get_alarm(key[0]), key[1], now)
            if st.due is None or (st.due <= now and _came_back(st.alarm, standing)):
                self._paged.discard(key)
                self._owing.pop(key, None)
            elif st.due <= now:
                out.append(Owed(st.alarm, key[1], st.subject, st.sent, st.failures + 1))
        return out

    def next_due(self) -> datetime | None:
        """When the next all-clear known to be owed is due (a retry); None: none is."""
        return min((st.due for st in self._owing.values() if st.due is not None), default=None)

    def _scan(self) -> set[Key]:
        events = self.store.events(entity="page", newest_first=True, limit=SCAN_EVENTS)
        done = {(e.entity_id, e.data.get("channel")) for e in events if e.action == "page-cleared"}
        return {
            (e.entity_id, str(e.data["channel"]))
            for e in events
            if e.action == "page-sent"
            and e.entity_id is not None
            and e.data.get("channel") in self.channels
            and (e.entity_id, e.data.get("channel")) not in done
        }

    def _read(self, a: Alarm, channel: str, now: datetime) -> _Owing:
        """What ``channel`` owes alarm ``a`` (no longer active), from its page events."""
        if not self.mine(a):
            return _Owing(a, None)
        events = [
            e
            for e in self.store.events(entity="page", entity_id=a.id, limit=None)
            if e.data.get("channel") == channel
        ]
        sent = [e for e in events if e.action == "page-sent"]
        failed = [e for e in events if e.action == "page-failed" and e.data.get("all_clear")]
        if not sent or any(e.action == "page-cleared" for e in events):
            return _Owing(a, None)
        if len(failed) >= ALL_CLEAR_TRIES:
            return _Owing(a, None)  # given up: the last failure says so in the trail
        ended = min((t for t in (a.acknowledged_at, a.cleared_at) if t is not None), default=now)
        if not failed and (now - ended).total_seconds() > STALE_S:
            return _Owing(a, None)
        if failed:
            due = failed[-1].time + timedelta(seconds=self.backoff(len(failed)))
        elif a.acknowledged_at is None:  # cleared without a person: told once it stays so
            due = ended + timedelta(seconds=SETTLE_S)
        else:
            due = ended
        subject = str(sent[-1].data.get("subject") or a.message)
        return _Owing(a, due, subject, len(sent), len(failed))


def _came_back(a: Alarm, standing: Mapping[int, Alarm]) -> bool:
    """Whether ``a`` was cleared (never acknowledged) and its condition stands again: a newer
    alarm of the same run, subject and code."""
    if a.acknowledged_at is not None:
        return False
    return any(
        b.id > a.id and (b.run_id, b.device, b.code) == (a.run_id, a.device, a.code)
        for b in standing.values()
    )
