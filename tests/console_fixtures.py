"""A run database filled by a simulated Kriks run, for the console's model and view tests.

:func:`build_world` registers the shipped Kriks protocol (protocols/kriks2011_da.yaml) with
:func:`labctl.engine.register_run` and drives :class:`labctl.engine.Engine` on a
:class:`~labctl.clock.VirtualClock` with the fake devices of ``tests/fakes.py`` until the
morning of day 12. The operator is the store-backed :class:`~labctl.operator.StoreOperator`:
a scripted operator answers its prompts through ``answer`` commands, as the console does,
after each prompt's planned duration. Near the end a liquid-handler failure is injected
(an open recovery prompt with a default and a deadline) and an incubator raises a CO2
alarm; incubator climate readings (every 6 h) are recorded as ``climate`` events of entity
``device`` (the convention :mod:`labctl.gui.models` reads).

Building takes a few seconds, so tests build one world per session and work on copies
(:func:`copy_world`): the database file and the fake devices' state folder travel together,
so an engine opened on the copy (:func:`open_sim`) finds the devices as they were left.
"""

from __future__ import annotations

import atexit
import os
import shutil
import sqlite3
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from fakes import FakeDevice, fake_workcell

from labctl.accounts import Meaning, Role
from labctl.clock import VirtualClock
from labctl.devices import DeviceAlarm
from labctl.engine import Engine, EngineConfig, register_run
from labctl.engine.presence import EngineLock
from labctl.jobs import WorkcellRoles
from labctl.operator import StoreOperator
from labctl.plan.resolve import resolve
from labctl.store import Store
from labctl.validate import load_protocol

ROOT = Path(__file__).resolve().parent.parent
KRIKS = ROOT / "protocols" / "kriks2011_da.yaml"
TZ = "Europe/Stockholm"
DAY0 = datetime(2026, 12, 1, 9, 0)  # local wall time in TZ
CLOCK_START = datetime(2026, 12, 1, 6, 0, tzinfo=timezone.utc)
SIM_ACTOR = "sim-operator"
QC_VALUE = 72.0  # what the scripted operator reports for every QC measure (passes >= 60 %)


@dataclass(frozen=True)
class World:
    """A run database on disk with its fake devices' state, frozen at ``now`` (aware UTC)."""

    db: Path
    state_dir: Path
    now: datetime
    run_id: int
    plates: tuple[str, ...]


@dataclass
class Sim:
    """An engine with fake devices opened on a world; ``clock`` starts at ``world.now``."""

    world: World
    store: Store
    clock: VirtualClock
    engine: Engine
    devices: dict[str, Any]
    answered: set[int] = field(default_factory=set)

    def close(self) -> None:
        self.store.close()


def _devices(store: Store, clock: VirtualClock, state_dir: Path) -> dict[str, Any]:
    devices: dict[str, Any] = dict(fake_workcell(clock, state_dir))
    devices["operator"] = StoreOperator(store, "operator")
    return devices


def engine_config() -> EngineConfig:
    # A 30 s poll keeps the number of loop passes (and the build time) down.
    return EngineConfig(poll_s=30.0)


def answer_due_prompts(store: Store, clock: VirtualClock, answered: set[int]) -> int:
    """The scripted operator: answer each open task prompt once its job's duration is over
    (a minute at most).

    Answers go through ``answer`` commands (what the console writes); QC gates get
    :data:`QC_VALUE`. Recovery and decision prompts are left for the test. Returns how many
    answers were queued.
    """
    n = 0
    now = clock.now()
    for p in store.open_prompts():
        if p.kind != "task" or p.id in answered:
            continue
        duration = 60.0
        if p.job_id is not None:
            spec = store.get_job(p.job_id).spec or {}
            # A brisk operator: at most a minute a step, so no plate stays out of the
            # incubator past the protocol's 20 min (the engine records that as a deviation).
            duration = min(60.0, float(spec.get("duration_s", 60.0)))
        if now < p.created_at + timedelta(seconds=duration):
            continue
        qc = {c["measure"]: QC_VALUE for c in p.choices if isinstance(c, dict) and "measure" in c}
        answer: dict[str, Any] = {"done": True}
        if qc:
            answer["qc"] = qc
        store.insert_command(
            "answer", actor=SIM_ACTOR, run_id=p.run_id, args={"prompt": p.id, "answer": answer}
        )
        answered.add(p.id)
        n += 1
    return n


def _climate(store: Store, run_id: int, co2: float = 5.0) -> None:
    store.record(
        "climate",
        entity="device",
        actor="engine",
        run_id=run_id,
        reason="reading",
        data={"device": "inc-sim", "temperature_c": 37.0, "co2_pct": co2, "humidity_pct": 94.5},
    )


def build_world(
    folder: Path,
    *,
    plates: int = 2,
    day: int = 12,
    fault: bool = True,
    alarm: bool = True,
    progress: Callable[[str], None] | None = None,
) -> World:
    """Register a Kriks run of ``plates`` plates and simulate it to day ``day`` 09:00 local.

    With ``fault`` the liquid-handler run of P1's feed that day fails, leaving an open
    recovery prompt (default 'hold', deadline 15 min later); with ``alarm`` the incubator
    then reports a low CO2 alarm. Returns the world, frozen when the prompt opened.
    """
    folder.mkdir(parents=True, exist_ok=True)
    db, state_dir = folder / "labctl.db", folder / "devices"
    clock = VirtualClock(CLOCK_START)
    store = Store.open(db, clock)
    proto = load_protocol(KRIKS)
    plan = resolve(proto, {}, plates=plates, start=DAY0, timezone=TZ)
    labels = [f"P{i + 1}" for i in range(plates)]
    run_id = register_run(
        store,
        clock,
        proto,
        plan,
        WorkcellRoles.simulated(labels),
        name=f"Kriks DA batch {plates}x6w",
        workcell_name="simulated",
        workcell_text="",
        actor="alice",
    )
    store.insert_command("start", actor="alice", run_id=run_id, reason="batch 26-12-A")
    devices = _devices(store, clock, state_dir)
    engine = Engine(store, clock, devices, engine_config())
    answered: set[int] = set()
    next_climate = [clock.now()]
    # A quarter of an hour before the day's feed time: none of its chains has started.
    end = plan.start + timedelta(days=day) - timedelta(minutes=15)

    def tick() -> bool:
        answer_due_prompts(store, clock, answered)
        if clock.now() >= next_climate[0]:
            _climate(store, run_id)
            next_climate[0] = clock.now() + timedelta(hours=6)
        return clock.now() >= end

    engine.run(until=tick, max_idle_s=900)
    if progress:
        progress(f"day {day} reached at {clock.now():%Y-%m-%d %H:%M} UTC")
    if fault:
        lh: FakeDevice = devices["ot2-sim"]
        lh.fail_job = (f":d{day}-feed-", "/P1/")  # the day's feed of P1, whenever it runs

        def failed() -> bool:
            tick()
            return any(p.kind == "recovery" for p in store.open_prompts(run_id))

        engine.run(until=failed, max_idle_s=900)
    if alarm:
        _climate(store, run_id, co2=4.1)
        devices["inc-sim"].alarm = DeviceAlarm(
            "inc-sim",
            "co2-low",
            "inc-sim: CO2 4.1 % below its 5.0 % setpoint: check the gas supply",
        )
        engine.watcher.next_check = None  # check at once rather than within the minute
        engine.step()
    now = clock.now()
    store.close()
    _checkpoint(db)
    return World(db, state_dir, now, run_id, tuple(labels))


def _checkpoint(db: Path) -> None:
    """Fold the WAL into the main file so that copying the one file copies everything."""
    conn = sqlite3.connect(str(db))
    try:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    finally:
        conn.close()


def copy_world(world: World, folder: Path) -> World:
    """A private copy of ``world`` in ``folder`` (database and device state)."""
    folder.mkdir(parents=True, exist_ok=True)
    db = folder / "labctl.db"
    shutil.copyfile(world.db, db)
    state = folder / "devices"
    if world.state_dir.exists():
        shutil.copytree(world.state_dir, state)
    return replace(world, db=db, state_dir=state)


def open_sim(world: World) -> Sim:
    """Open the world's store and an engine on fake devices, the clock at ``world.now``."""
    clock = VirtualClock(world.now)
    store = Store.open(world.db, clock, create=False)
    devices = _devices(store, clock, world.state_dir)
    engine = Engine(store, clock, devices, engine_config())
    return Sim(world, store, clock, engine, devices)


_WORLDS: dict[tuple[int, bool, bool], World] = {}


def fast_dir(prefix: str) -> Path:
    """A new temporary folder, in memory (/dev/shm) where there is one, removed at exit.

    The store syncs every commit to disk (synchronous = FULL); on tmpfs a sync costs
    nothing, which makes building a world about three times faster.
    """
    shm = Path("/dev/shm")
    where = str(shm) if shm.is_dir() and os.access(shm, os.W_OK) else None
    path = Path(tempfile.mkdtemp(prefix=prefix, dir=where))
    atexit.register(shutil.rmtree, path, True)
    return path


def shared_world(*, plates: int = 2, fault: bool = True, alarm: bool = True) -> World:
    """One built world per process and kind (building takes seconds); copy it before use."""
    key = (plates, fault, alarm)
    if key not in _WORLDS:
        _WORLDS[key] = build_world(
            fast_dir("labctl-console-world-"), plates=plates, fault=fault, alarm=alarm
        )
    return _WORLDS[key]


def task_state(store: Store, run_id: int, task_key: str, plate: str) -> str:
    """The state of plan task ``task_key`` (e.g. ``d13-feed-0900``) on one plate."""
    plates = {p.id: p.label for p in store.plates(run_id)}
    for t in store.tasks(run_id):
        spec = t.spec if isinstance(t.spec, dict) else {}
        if spec.get("task_key") == task_key and plates.get(t.plate_id) == plate:
            return t.state
    raise KeyError(f"run {run_id} has no task {task_key} on {plate}")


# --- an engine daemon's traces, for the console's engine strip -----------------------------

WALL_START = datetime(2026, 12, 13, 8, 0, tzinfo=timezone.utc)  # the wall clock of the tests
ENGINE_PID, ENGINE_HOST = 4242, "bay-pc"


@dataclass
class FakeDaemon:
    """What a running ``labctl engine`` leaves for its clients: the database's engine lock
    (held by this process) and a session in the store that beats when told. The engine
    that applies commands is still the test's own (``Sim.engine``)."""

    store: Store
    lock: EngineLock
    session_id: int

    def beat(self, at: datetime, *, held: str | None = None) -> None:
        self.store.engine_beat(self.session_id, at, held=held)

    def stop(self, at: datetime, reason: str) -> None:
        self.lock.last_words(
            {"stopped_at": at.isoformat(timespec="seconds"), "stop_reason": reason}
        )
        self.store.engine_stopped(self.session_id, at, reason=reason, actor="engine")
        self.lock.release()

    def release(self) -> None:
        self.lock.release()


def fake_daemon(db: Path, store: Store, at: datetime, *, held: str | None = None) -> FakeDaemon:
    """An engine 'running' on ``db`` since ``at`` (wall clock), beaten once then."""
    lock = EngineLock(db)
    lock.acquire({"pid": ENGINE_PID, "host": ENGINE_HOST, "since": at.isoformat()})
    s = store.engine_started(
        pid=ENGINE_PID, host=ENGINE_HOST, workcell="simulated", at=at, actor="engine"
    )
    d = FakeDaemon(store, lock, s.id)
    d.beat(at, held=held)
    return d


# --- accounts: who signs in to the console ---------------------------------------------------

#: The accounts of :func:`accounts_world`: name -> (role, full name, password). Alice is the
#: supervisor who registered the world's run; Dan, a developer, registered none.
USERS = {
    "alice": (Role.SUPERVISOR, "Alice Lind", "correct horse 1"),
    "olga": (Role.OPERATOR, "Olga Berg", "battery staple 2"),
    "dan": (Role.DEVELOPER, "Dan Ek", "pipette tips 33"),
    "ada": (Role.ADMIN, "Ada Admin", "admin only 444"),
}


def password(name: str) -> str:
    return USERS[name][2]


def add_accounts(db: Path, names: tuple[str, ...] = tuple(USERS)) -> None:
    """Give the database at ``db`` the accounts ``names`` of :data:`USERS`."""
    store = Store.open(db, VirtualClock(WALL_START), create=False)
    try:
        for name in names:
            role, full, pw = USERS[name]
            store.add_user(name, role, pw, full_name=full, actor="ada", now=WALL_START)
    finally:
        store.close()
    _checkpoint(db)


_ACCOUNT_WORLDS: dict[int, World] = {}


def accounts_world(*, plates: int = 2) -> World:
    """:func:`shared_world` with the accounts of :data:`USERS` (hashing four passwords
    takes a third of a second: done once per process); copy it before use."""
    if plates not in _ACCOUNT_WORLDS:
        w = copy_world(shared_world(plates=plates), fast_dir("labctl-console-accounts-") / "w")
        add_accounts(w.db)
        _ACCOUNT_WORLDS[plates] = w
    return _ACCOUNT_WORLDS[plates]


def make_practice(db: Path) -> None:
    """Mark the (copied) database a practice one: no accounts needed, nothing signed."""
    store = Store.open(db, VirtualClock(WALL_START), create=False)
    try:
        store.set_kind("practice", actor="trainer")
    finally:
        store.close()


def release_protocol(store: Store, path: Path, name: str = "alice") -> None:
    """Release the protocol file at ``path`` as ``name`` would with labctl protocol release."""
    import hashlib

    proto = load_protocol(path)
    digest = hashlib.sha256(proto.source_text.encode("utf-8")).hexdigest()
    sig = store.sign(
        name,
        password(name),
        meaning=Meaning.APPROVED,
        action="release-protocol",
        subject={"protocol": proto.id, "version": proto.version, "sha256": digest},
        reason="validated for the batch",
        now=WALL_START,
    )
    store.release_protocol(
        proto.id, proto.version, proto.source_text, signature=sig, now=WALL_START
    )


def shown_window(
    qtbot: Any,
    sim: Sim,
    wall: VirtualClock,
    *,
    actor: str | None = None,
    size: tuple[int, int] = (1500, 950),
) -> Any:
    """A console window on ``sim``'s database (its clock; ``wall`` for heartbeats and the
    lock), themed, shown at ``size`` and closed with the test (pytest-qt). It polls every
    50 ms; on a database with accounts it waits for a sign-in (:func:`sign_in_window`)."""
    from PyQt6.QtWidgets import QApplication

    from labctl.gui import theme
    from labctl.gui.main_window import MainWindow

    theme.apply(QApplication.instance())  # type: ignore[arg-type]
    w = MainWindow(sim.world.db, sim.clock, wall=wall, poll_ms=50, actor=actor)
    qtbot.addWidget(w)
    w.resize(*size)
    w.show()
    return w


def sign_in_window(qtbot: Any, win: Any, name: str, pw: str | None = None) -> None:
    """Sign ``name`` in to a console window through its sign-in dialog (pytest-qt)."""
    qtbot.waitUntil(
        lambda: win.access.sign_in_dialog is not None and win.access.sign_in_dialog.isVisible(),
        timeout=10_000,
    )
    dlg = win.access.sign_in_dialog
    dlg.name.setText(name)
    dlg.password.setText(password(name) if pw is None else pw)
    dlg.sign_in_button.click()
    qtbot.waitUntil(lambda: win.access.user is not None, timeout=10_000)
