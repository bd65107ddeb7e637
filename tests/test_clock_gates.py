"""VirtualClock gates: virtual time waits for a simulated device served on another thread
and stops at each of its events (labctl.clock)."""

from __future__ import annotations

import threading
from datetime import datetime, timedelta, timezone

from labctl.clock import Activity, RealClock, VirtualClock, Work

T0 = datetime(2026, 12, 7, 9, 0, tzinfo=timezone.utc)


class _Device:
    """A device whose motions end at fixed virtual times; a request may be 'in hand'."""

    def __init__(self, clock: VirtualClock, events: list[datetime]) -> None:
        self.clock = clock
        self.events = events
        self.busy = False
        self.seen: list[datetime] = []  # the clock's time at each moved()

    def activity(self) -> Activity:
        now = self.clock.now()
        later = [e for e in self.events if e > now]
        return Activity(self.busy, bool(later), min(later, default=None))

    def moved(self) -> None:
        self.seen.append(self.clock.now())


def test_a_jump_stops_at_each_event_of_a_gate_on_the_way() -> None:
    clock = VirtualClock(T0)
    dev = _Device(clock, [T0 + timedelta(seconds=s) for s in (2, 5, 7.5)])
    clock.add_gate(dev)
    clock.sleep(60)
    assert clock.now() == T0 + timedelta(seconds=60)
    assert dev.seen == [T0 + timedelta(seconds=s) for s in (2, 5, 7.5, 60)]
    clock.remove_gate(dev)
    clock.sleep(10)
    assert len(dev.seen) == 4  # no longer asked


def test_the_clock_does_not_move_while_a_request_is_in_hand() -> None:
    clock = VirtualClock(T0)
    dev = _Device(clock, [])
    dev.busy = True
    clock.add_gate(dev)
    during: list[datetime] = []

    def release() -> None:
        threading.Event().wait(0.05)  # real time, on the device's thread
        during.append(clock.now())
        dev.busy = False

    t = threading.Thread(target=release)
    t.start()
    clock.sleep_until(T0 + timedelta(hours=1))
    t.join()
    assert during == [T0]  # still at the start while the request was in hand
    assert clock.now() == T0 + timedelta(hours=1)


def test_without_gates_a_sleep_jumps_at_once() -> None:
    clock = VirtualClock(T0)
    clock.sleep(3600)
    assert clock.now() == T0 + timedelta(hours=1)


def test_the_clock_waits_while_a_client_holds_work_and_its_device_waits_for_nothing() -> None:
    clock = VirtualClock(T0)
    dev = _Device(clock, [])
    clock.add_gate(dev)
    work = Work(clock)  # a driver's worker between two lines: the device does not wait
    during: list[datetime] = []

    def finish() -> None:
        threading.Event().wait(0.05)
        during.append(clock.now())
        work.release()
        work.release()  # idempotent

    t = threading.Thread(target=finish)
    t.start()
    clock.sleep(600)
    t.join()
    assert during == [T0] and clock.now() == T0 + timedelta(minutes=10)
    Work(RealClock()).release()  # other clocks ignore it
