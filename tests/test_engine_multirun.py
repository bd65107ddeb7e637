"""Several runs at once on one workcell: three protocols in three time zones, one engine.

Each run keeps its own zone (feeds at the protocol's local time), its alarms and prompts
are filed under it, device alarms belong to the workcell (and concern every run on it),
manual work follows the workcell's operator hours in the workcell's own zone, and no
device does two things at once (read from the fake devices' own records, not the store).
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from labctl.clock import VirtualClock
from labctl.devices import DeviceAlarm
from labctl.engine import Engine, EngineConfig, register_run
from labctl.engine.machines import JobState
from labctl.jobs import WorkcellRoles
from labctl.plan.resolve import resolve
from labctl.store import Store
from labctl.validate import load_protocol
from labctl.workcell import parse_workcell
from tests.fakes import FakeDevice, fake_workcell

ROOT = Path(__file__).resolve().parent.parent
T0 = datetime(2026, 11, 29, 0, 0, tzinfo=timezone.utc)  # a Sunday
WORKCELL_ZONE = "Europe/Stockholm"
WORKCELL = f"""
name: bay
timezone: {WORKCELL_ZONE}
devices:
  ot2-sim: {{driver: opentrons, deck: {{plate: [1, 2]}}}}
  inc-sim: {{driver: cytomat, slots: 20}}
  operator: {{driver: operator}}
operators:
  hours: {{mon-fri: "08:00-18:00", sat: "08:00-18:00", sun: "08:00-18:00"}}
"""
# (protocol, run time zone, day 0, plate labels)
RUNS = [
    ("kriks2011_da.yaml", "Europe/Stockholm", datetime(2026, 12, 1), ["A1"]),
    ("kim2021_da.yaml", "America/New_York", datetime(2026, 12, 2), ["B1"]),
    ("nolbrant2017_vm.yaml", "Asia/Tokyo", datetime(2026, 12, 3), ["C1"]),
]


class Bay:
    """One store, one engine, the fake workcell, and the three runs registered on it."""

    def __init__(self, tmp_path: Path, hours: str | None = None) -> None:
        self.clock = VirtualClock(T0)
        self.store = Store.open(tmp_path / "run.db", self.clock, durable=False)
        text = (
            WORKCELL
            if hours is None
            else WORKCELL.replace(
                'mon-fri: "08:00-18:00", sat: "08:00-18:00", sun: "08:00-18:00"', hours
            )
        )
        wc = parse_workcell(text, "bay.yaml")
        self.run_ids: list[int] = []
        self.zones: dict[int, str] = {}
        slot = 1
        for file, zone, day0, labels in RUNS:
            proto = load_protocol(ROOT / "protocols" / file)
            plan = resolve(proto, plates=len(labels), start=day0, timezone=zone)
            roles = WorkcellRoles(
                "ot2-sim",
                "inc-sim",
                None,
                "operator",
                {label: slot + i for i, label in enumerate(labels)},
                deck_slots=(1, 2),
            )
            slot += len(labels)
            moi = proto.timing.max_out_of_incubator
            run_id = register_run(
                self.store,
                self.clock,
                proto,
                plan,
                roles,
                name=f"{proto.id} in {zone}",
                workcell_name=wc.name,
                workcell_text=text,
                actor="tester",
                plate_labels=labels,
                operators=wc.operator_calendar(),
            )
            assert moi is not None
            self.run_ids.append(run_id)
            self.zones[run_id] = zone
        self.devices = fake_workcell(self.clock)
        self.devices["ot2-sim"].durations["lh_run"] = 900.0
        self.engine = Engine(self.store, self.clock, self.devices, EngineConfig())

    def start_all(self) -> None:
        for rid in self.run_ids:
            self.store.insert_command("start", actor="tester", run_id=rid, reason="go")

    def states(self) -> list[str]:
        return [self.store.get_run(r).state for r in self.run_ids]

    def run_until_done(self, days: float = 60) -> None:
        end = self.clock.now() + timedelta(days=days)
        self.engine.run(
            until=lambda: all(s == "completed" for s in self.states()) or self.clock.now() > end
        )


def _intervals(dev: FakeDevice) -> list[tuple[datetime, datetime, str]]:
    """What the device itself did, from its own records: (start, end, job key)."""
    out = []
    for op in dev.ops.values():
        start = datetime.fromisoformat(op["start"])
        out.append((start, start + timedelta(seconds=op["duration"]), op["job"]))
    return sorted(out)


@pytest.fixture(scope="module")
def finished(tmp_path_factory: pytest.TempPathFactory) -> Bay:
    bay = Bay(tmp_path_factory.mktemp("bay"))
    bay.start_all()
    bay.run_until_done()
    return bay


def test_three_runs_of_three_protocols_complete_with_every_feed_once(finished: Bay) -> None:
    bay = finished
    assert bay.states() == ["completed"] * 3
    feeds = [a["job"] for a in bay.devices["ot2-sim"].actions]
    assert len(feeds) == len(set(feeds))  # nothing doubled
    for rid in bay.run_ids:
        lh_tasks = {
            j.task_id for j in bay.store.jobs(rid) if j.op == "lh_run" and j.state == "done"
        }
        planned = {j.task_id for j in bay.store.jobs(rid) if j.op == "lh_run"}
        assert lh_tasks == planned and planned  # nothing lost
        assert sum(f.startswith(f"r{rid}:") for f in feeds) == len(planned)
    assert bay.store.verify_chain().ok


def test_no_device_does_two_things_at_once(finished: Bay) -> None:
    for name in ("ot2-sim", "inc-sim"):
        done = _intervals(bay_dev := finished.devices[name])
        assert done, name
        for (_, end, key), (start, _, nxt) in zip(done, done[1:], strict=False):
            assert start >= end, f"{bay_dev.name}: {nxt} started before {key} ended"


def test_each_run_feeds_at_the_protocols_time_in_its_own_zone(finished: Bay) -> None:
    bay = finished
    for rid in bay.run_ids:
        zone = ZoneInfo(bay.zones[rid])
        tasks = {t.id: t for t in bay.store.tasks(rid)}
        starts = [
            j.started_at
            for j in bay.store.jobs(rid)
            if j.op == "lh_run" and j.started_at is not None and tasks[j.task_id].kind == "feed"
        ]
        assert starts
        for t in starts:
            local = t.astimezone(zone)
            # feed_at 09:00 with a 2 h window: 07:00 to 11:00 local, in the run's zone
            assert 7 <= local.hour < 11, (rid, bay.zones[rid], local)
        for task in tasks.values():
            if task.kind == "feed" and task.window_end is not None:
                main = [
                    j
                    for j in bay.store.jobs(rid)
                    if j.task_id == task.id and j.op == "lh_run" and j.started_at
                ]
                assert all(task.window_start <= j.started_at <= task.window_end for j in main)


def test_manual_work_follows_the_workcells_hours_in_the_workcells_zone(tmp_path: Path) -> None:
    # People are there 06:00-23:00 Stockholm time; the runs are in Stockholm, New York and
    # Tokyo, so some of the Tokyo run's events fall in the Stockholm night.
    bay = Bay(tmp_path, hours='mon-sun: "06:00-23:00"')
    bay.start_all()
    bay.run_until_done()
    z = ZoneInfo(WORKCELL_ZONE)
    late = {
        a.device.removeprefix("task "): a.raised_at
        for rid in bay.run_ids
        for a in bay.store.alarms_for_run(rid)
        if a.code == "late"
    }
    inside = outside = 0
    for rid in bay.run_ids:
        tasks = {t.id: t for t in bay.store.tasks(rid)}
        for j in bay.store.jobs(rid):
            if j.op != "prompt" or j.started_at is None or tasks[j.task_id].kind != "event":
                continue
            local = j.started_at.astimezone(z)
            if 6 <= local.hour < 23:
                inside += 1
                continue
            # Nobody is expected outside the workcell's hours without being told: the task
            # was reported late before it was due to start.
            key = tasks[j.task_id].key
            assert key in late and late[key] <= j.started_at, (key, local)
            outside += 1
    assert inside >= 8 and outside >= 1


def test_alarms_and_prompts_are_filed_under_their_run(tmp_path: Path) -> None:
    bay = Bay(tmp_path)
    second = bay.run_ids[1]
    # The second run's first feed fails once; the incubator door is open for an hour.
    bay.devices["ot2-sim"].fail_job = (f"r{second}:", "-feed-")
    opens = datetime(2026, 12, 1, 7, 0, tzinfo=timezone.utc)
    inc = bay.devices["inc-sim"]

    def door(now: datetime) -> None:
        inc.alarm = (
            DeviceAlarm("inc-sim", "door", "door open")
            if opens <= now < opens + timedelta(hours=1)
            else None
        )

    bay.engine.hooks.append(door)
    bay.start_all()
    end = bay.clock.now() + timedelta(days=10)
    bay.engine.run(until=lambda: bool(bay.store.open_prompts(second)) or bay.clock.now() > end)
    [prompt] = bay.store.open_prompts()
    assert prompt.run_id == second and prompt.kind == "recovery"
    bay.store.insert_command(
        "answer", actor="tester", run_id=second, args={"prompt": prompt.id, "answer": "retry"}
    )
    bay.run_until_done()
    assert bay.states() == ["completed"] * 3
    [door_alarm] = [a for a in bay.store.alarms() if a.code == "door"]
    assert door_alarm.run_id is None and door_alarm.device == "inc-sim"
    # A door left open concerns every run registered on the workcell then.
    for rid in bay.run_ids:
        assert door_alarm.id in [a.id for a in bay.store.alarms_for_run(rid)]
    [recovery] = [p for p in bay.store.prompts_for_job(prompt.job_id)]
    assert recovery.run_id == second
    failed_job = bay.store.get_job(prompt.job_id)
    assert failed_job.state == JobState.DONE.value and failed_job.attempts == 1


def test_the_schedule_sees_a_device_busy_with_a_paused_runs_job(tmp_path: Path) -> None:
    bay = Bay(tmp_path)
    first, second = bay.run_ids[0], bay.run_ids[1]
    bay.devices["ot2-sim"].durations["lh_run"] = 6 * 3600.0  # a long run on the robot
    bay.start_all()
    end = bay.clock.now() + timedelta(days=5)
    eng = bay.engine

    def first_feed_running() -> bool:
        return (
            any(
                eng.picture.jobs[i].op.value == "lh_run"
                and eng.picture.jobs[i].key.startswith(f"r{first}:")
                for i in eng.picture.running
            )
            or bay.clock.now() > end
        )

    eng.run(until=first_feed_running)
    [jid] = [i for i in eng.picture.running if eng.picture.jobs[i].op.value == "lh_run"]
    busy_until = eng.picture.jobs[jid].started_at + timedelta(seconds=6 * 3600)
    bay.store.insert_command("pause", actor="tester", run_id=first, reason="check", args={})
    eng.step()
    assert bay.store.get_run(first).state == "paused"
    assert eng.planner.schedule is not None
    slots = eng.planner.schedule.slots
    # Every liquid handling of the other runs is planned after the paused run's job ends.
    others = [
        s for k, s in slots.items() if not k.startswith(f"r{first}:") and s.device == "ot2-sim"
    ]
    assert others
    assert all(s.start >= busy_until or s.end <= eng.picture.jobs[jid].started_at for s in others)
    assert any(k.startswith(f"r{second}:") for k in slots)
