"""The live harness: the practice workcell and the engine as separate OS processes, paced,
with chaos, judged by the devices' own logs.

It starts ``labctl simulators up`` (the simulated robot, incubator and operator bot),
registers a run with ``labctl run``, starts ``labctl engine``, and then, at random moments
(seeded): SIGKILLs the engine and starts it again; SIGKILLs the simulators and starts them
again (a device crash: the robot forgets its runs, the incubator comes back where it was);
and rolls the run database back to an earlier copy (everything that holds it stopped, the
copy put back, everything started again; the engine must then hold until a person who
checked the devices confirms). A simulated person confirms a held engine and releases a
held run, as a supervisor would.

The verdict is counted from what the devices did, never from the store (which a rollback
rewinds): each planned liquid handling's wells fed by robot runs and by hand (lost: a well
never fed; doubled: a well fed by two runs or twice by hand), each plate fetched and stored
as often as it has feeds, each carry done once.

Used by ``tests/test_live.py`` (a short run, in CI) and ``bench/soak.py`` (a long one).
"""

from __future__ import annotations

import json
import os
import random
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from labctl.clock import PacedClock, RealClock
from labctl.store import Store

WALL = RealClock()
LIQUID_IN = ("dispense", "dispenseInPlace")


def free_base_port(rng: random.Random) -> int:
    """A free port with the next one free too, below the range the system hands out for
    outgoing connections (else the engine's client socket could take it while the
    simulators are down)."""
    low = 32768
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    if ranges.exists():
        low = int(ranges.read_text().split()[0])
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low - 2)
        try:
            for p in range(port, port + 4):  # robot, incubator, arm motion and status
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise RuntimeError("no two free ports in a row")


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    if not path.exists():
        return out
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:  # a line cut short by a kill
            continue
    return out


def protocol_name_of(job_key: str) -> str:
    """How the controller names a job's protocol file on the robot (the job key, readable)."""
    import re

    return re.sub(r"[^A-Za-z0-9_.-]", "_", job_key).lstrip(".")


@dataclass(frozen=True)
class Planned:
    """What the registered run asks of the devices, read from the store before anything
    ran (a rollback cannot rewind it): liquid handlings with their deck slot and wells, the
    carries, and how many feeds each incubator slot's plate has."""

    feeds: dict[str, tuple[str, tuple[str, ...]]]  # lh job key -> (culture labware, wells)
    carries: tuple[str, ...]  # prompt job keys of plate carries
    feeds_per_slot: dict[int, int]
    riders: dict[str, tuple[str, ...]] = field(default_factory=dict)  # batch leader -> riders
    deck_of: dict[str, str] = field(default_factory=dict)  # lh job key of a batch -> deck slot


@dataclass
class DeckLog:
    """Which plate the arm left on each deck slot, and when (from the arm's own log): the
    deck positions of a batch are chosen as the plates arrive, so the plan cannot say."""

    stations: dict[str, int]  # robot deck slot -> arm station
    moves: list[dict[str, Any]]
    known: bool

    @classmethod
    def read(cls, workcell: Path, arm_log: Path) -> DeckLog:
        import yaml

        wc = yaml.safe_load(workcell.read_text(encoding="utf-8")) if workcell.exists() else {}
        arm = (wc.get("devices") or {}).get("arm-sim") or {}
        stations = {
            name.split("/", 1)[1]: int(n)
            for name, n in (arm.get("stations") or {}).items()
            if name.startswith("ot2-sim/")
        }
        moves = [
            e
            for e in read_jsonl(arm_log)
            if e.get("command") in ("PickPlate", "PlacePlate")
            and e.get("result") in ("gripped", "placed")
        ]
        return cls(stations, moves, bool(stations) and arm_log.exists())

    def plate_at(self, slot: str, when: str) -> str | None:
        """The label of the plate on deck slot ``slot`` at ``when`` (ISO time), or None."""
        station = self.stations.get(slot)
        at = datetime.fromisoformat(when)
        plate: str | None = None
        for e in self.moves:
            if datetime.fromisoformat(str(e["time"])) > at:
                break
            if e.get("station") == station:
                plate = str(e.get("plate")) if e["command"] == "PlacePlate" else None
        return plate


@dataclass
class Tally:
    """Lost and doubled physical actions, from the devices' logs."""

    lost: list[str] = field(default_factory=list)
    doubled: list[str] = field(default_factory=list)
    prompts: int = 0

    def line(self, kills: int, crashes: int, rollbacks: int) -> str:
        return (
            f"soak: {kills} engine kills, {crashes} device crashes, {rollbacks} rollbacks, "
            f"lost {len(self.lost)}, doubled {len(self.doubled)}, prompts {self.prompts}"
        )


class LiveWorkcell:
    """The processes of one live trial, in ``folder``; ``say`` gets what happens."""

    def __init__(
        self,
        folder: Path,
        *,
        plates: int,
        pace: float,
        seed: int,
        say: Callable[[str], None] = print,
        arm: bool = False,
        batch: int = 1,
    ) -> None:
        self.folder = folder
        self.arm = arm  # a PF400 arm carries the plates (else the operator bot does)
        self.batch = batch  # plates the robot feeds in one run
        self.wc = folder / "wc"
        self.db = self.wc / "run.db"
        self.snapshots = folder / "snapshots"
        self.snapshots.mkdir(parents=True, exist_ok=True)
        self.plates, self.pace = plates, pace
        self.rng = random.Random(seed)
        self.port = free_base_port(self.rng)
        self.say = say
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.sims: subprocess.Popen[bytes] | None = None
        self.engine: subprocess.Popen[bytes] | None = None
        self.kills = self.crashes = self.rollbacks = 0
        self.planned: Planned | None = None
        self._snaps: list[tuple[float, Path]] = []
        self._starts = 0
        self.person_acts = 0  # what the simulated supervisor answered

    # ---- processes ------------------------------------------------------------------

    def _spawn(self, name: str, *args: str) -> subprocess.Popen[bytes]:
        log = self.folder / f"{name}.out"
        with log.open("ab") as fh:
            return subprocess.Popen(
                [sys.executable, "-m", "labctl", *args],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.folder,
            )

    def cli(self, *args: str) -> tuple[int, str]:
        done = subprocess.run(
            [sys.executable, "-m", "labctl", *args, "--db", str(self.db)],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.folder,
            timeout=120,
        )
        return done.returncode, done.stdout + done.stderr

    def start_simulators(self) -> None:
        args = ("simulators", "up", "--out", str(self.wc), "--db", str(self.db))
        args += ("--port", str(self.port), "--pace", f"{self.pace:g}", "--plates", str(self.plates))
        args += () if self.arm else ("--no-arm",)
        args += ("--batch", str(self.batch))
        self._starts += 1
        name = f"sims-{self._starts}"
        self.sims = self._spawn(name, *args)
        out = self.folder / f"{name}.out"
        self._wait(
            "the simulators",
            lambda: out.exists() and "labctl answer PROMPT CHOICE" in out.read_text(),
            60,
        )

    def start_engine(self) -> None:
        args = ("engine", "--workcell", str(self.wc / "workcell.yaml"), "--db", str(self.db))
        self.engine = self._spawn("engine", *args)

    def _kill(self, p: subprocess.Popen[bytes] | None) -> None:
        if p is not None and p.poll() is None:
            p.send_signal(signal.SIGKILL)
            p.wait(20)

    def kill_engine(self) -> None:
        """SIGKILL the engine at whatever it was doing, then start it again."""
        self._kill(self.engine)
        self.kills += 1
        self.say(f"chaos: engine killed ({self.kills})")
        WALL.sleep(self.rng.uniform(0.0, 1.0))
        self.start_engine()

    def crash_devices(self) -> None:
        """SIGKILL the simulators (the robot forgets its runs) and start them again."""
        self._kill(self.sims)
        self.crashes += 1
        self.say(f"chaos: devices crashed ({self.crashes})")
        WALL.sleep(self.rng.uniform(0.0, 1.0))
        self.start_simulators()

    def snapshot(self) -> None:
        """A consistent copy of the database now (SQLite's backup, beside a writing engine)."""
        path = self.snapshots / f"{len(self._snaps):04d}.db"
        src = sqlite3.connect(str(self.db))
        dst = sqlite3.connect(str(path))
        try:
            src.backup(dst)
        finally:
            dst.close()
            src.close()
        self._snaps.append((WALL.monotonic(), path))

    def rollback(self) -> bool:
        """Put back a copy taken a few seconds ago, with everything stopped (as a restore
        from backup is done); False when no copy is old enough."""
        now = WALL.monotonic()
        older = [p for t, p in self._snaps if now - t >= 1.0]
        if not older:
            return False
        copy = self.rng.choice(older[-3:])
        self._kill(self.engine)
        self._kill(self.sims)
        for suffix in ("-wal", "-shm"):
            Path(str(self.db) + suffix).unlink(missing_ok=True)
        shutil.copy(copy, self.db)
        self.rollbacks += 1
        self.say(f"chaos: database rolled back to {copy.name} ({self.rollbacks})")
        self.start_simulators()
        self.start_engine()
        return True

    def stop(self) -> None:
        for p in (self.engine, self.sims):
            if p is not None and p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(30)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait(10)

    @staticmethod
    def _wait(what: str, ok: Callable[[], Any], timeout_s: float) -> Any:
        deadline = WALL.monotonic() + timeout_s
        while True:
            value = ok()
            if value:
                return value
            if WALL.monotonic() > deadline:
                raise TimeoutError(f"no {what} within {timeout_s:g} s")
            WALL.sleep(0.05)

    # ---- the run --------------------------------------------------------------------

    def practice_now(self) -> datetime:
        with Store.open(self.db, WALL, create=False) as store:
            epoch = store.clock_epoch()
        assert epoch is not None
        return PacedClock.shared(epoch).now()

    def register(self, protocol: str, day0: str) -> None:
        path = self.folder / "protocol.yaml"
        path.write_text(protocol, encoding="utf-8")
        wc = str(self.wc / "workcell.yaml")
        rc, out = self.cli(
            "run", str(path), "--workcell", wc, "--plates", str(self.plates), "--start", day0
        )
        if rc != 3 and rc != 0:
            raise RuntimeError(out)
        with Store.open(self.db, WALL, create=False) as store:
            jobs = store.jobs(1)
        feeds: dict[str, tuple[str, tuple[str, ...]]] = {}
        carries: list[str] = []
        per_slot: Counter[int] = Counter()
        riders: dict[str, tuple[str, ...]] = {}
        deck_of: dict[str, str] = {}
        for j in jobs:
            p = (j.spec or {}).get("params") or {}
            key = (j.spec or {})["key"]
            if j.op == "lh_run":
                feeds[key] = (str(p.get("labware")), tuple(str(w) for w in p.get("wells") or ()))
                if p.get("riders") or p.get("rides"):  # a batch: each plate on its own slot
                    deck_of[key] = str(p.get("deck_slot"))
                    riders[key] = tuple(str(k) for k in p.get("riders") or ())
            elif j.op == "prompt" and p.get("step") in ("to_deck", "to_incubator"):
                carries.append(key)
            elif j.op == "fetch":
                per_slot[int(p["slot"])] += 1
        self.planned = Planned(feeds, tuple(carries), dict(per_slot), riders, deck_of)

    def run_state(self) -> str:
        try:
            with Store.open(self.db, WALL, create=False) as store:
                return store.get_run(1).state
        except Exception:  # noqa: BLE001 - mid-rollback: ask again
            return "unknown"

    def person(self) -> None:
        """What a supervisor does at the console: confirm a held engine (the devices were
        checked), release a held run."""
        try:
            with Store.open(self.db, WALL, create=False) as store:
                engine = store.last_engine()
                held = engine is not None and engine.state == "running" and bool(engine.held)
                decisions = [p for p in store.open_prompts() if p.kind == "decision"]
                holding = store.get_run(1).state == "holding"
        except Exception:  # noqa: BLE001
            return
        if held:
            self.person_acts += 1
            rc, out = self.cli("confirm-store", "--reason", "devices checked after the restore")
            self.say(f"person: confirm-store -> {rc} {out.strip()[:120]}")
        for p in decisions:
            self.person_acts += 1
            rc, out = self.cli("answer", str(p.id), "release", "--reason", "supervisor: go on")
            self.say(f"person: release after '{p.text[:60]}' -> {rc}")
        if holding and not decisions:
            with Store.open(self.db, WALL, create=False) as store:
                waiting = [
                    p for p in store.open_prompts(1) if p.kind in ("recovery", "interrupted")
                ]
            if not waiting:
                rc, out = self.cli("release", "1", "--reason", "supervisor: nothing left to decide")
                self.say(f"person: release -> {rc} {out.strip()[:80]}")

    # ---- the verdict, from the devices ------------------------------------------------

    def shared_runs(self) -> int:
        """Robot runs that dispensed into the culture plates on two deck slots."""
        slots: dict[str, set[str]] = defaultdict(set)
        for e in read_jsonl(self.wc / "devices" / "robot_actions.jsonl"):
            if e.get("event") == "command" and e.get("commandType") in LIQUID_IN:
                if str(e.get("labware", "")) in {
                    lw for lw, _ in (self.planned.feeds.values() if self.planned else ())
                }:
                    slots[str(e.get("runId"))].add(str(e.get("slot")))
        return sum(1 for s in slots.values() if len(s) > 1)

    def tally(self) -> Tally:
        assert self.planned is not None
        logs = self.wc / "devices"
        t = Tally()
        # Robot: which run fed which well of which job (its protocol file names the job).
        robot = read_jsonl(logs / "robot_actions.jsonl")
        job_of_protocol: dict[str, str] = {}
        names = {protocol_name_of(k): k for k in self.planned.feeds}
        for e in robot:
            if e.get("event") == "protocol_upload":
                for f in e.get("files") or []:
                    stem = str(f).split(".", 1)[0]
                    if stem in names:
                        job_of_protocol[str(e.get("protocolId"))] = names[stem]
        job_of_run: dict[str, str] = {}
        fed_by: dict[tuple[str, str], set[str]] = defaultdict(set)  # (job, well) -> runs
        deck = DeckLog.read(self.wc / "workcell.yaml", logs / "arm_actions.jsonl")
        for e in robot:
            rid = str(e.get("runId"))
            if e.get("event") == "run_created" and str(e.get("protocolId")) in job_of_protocol:
                job_of_run[rid] = job_of_protocol[str(e.get("protocolId"))]
            elif (
                e.get("event") == "command"
                and e.get("commandType") in LIQUID_IN
                and rid in job_of_run
            ):
                key = job_of_run[rid]
                labware, _wells = self.planned.feeds[key]
                # Into the culture plate (wherever the engine put it on the deck; a run of
                # a batch's leader feeds each plate of the batch at its own deck slot).
                if str(e.get("labware")) != labware:
                    continue
                group = (key, *self.planned.riders.get(key, ()))
                if len(group) > 1:
                    slot = str(e.get("slot"))
                    on_deck = deck.plate_at(slot, str(e.get("time")))
                    mine = [
                        k
                        for k in group
                        if (
                            k.split("/")[1] == on_deck
                            if deck.known
                            else self.planned.deck_of.get(k) == slot
                        )
                    ]
                    if not mine:
                        t.doubled.append(f"run {rid} of {key} fed deck slot {slot}: no plate of it")
                        continue
                    key = mine[0]
                fed_by[(key, str(e.get("well")))].add(rid)
        hands: Counter[tuple[str, str]] = Counter()
        for e in read_jsonl(logs / "operator_actions.jsonl"):
            if e.get("action") == "finish_by_hand":
                for w in e.get("wells") or []:
                    hands[(str(e["job"]), str(w))] += 1
        for key, (_slot, wells) in sorted(self.planned.feeds.items()):
            for w in wells:
                n = len(fed_by.get((key, w), ())) + hands[(key, w)]
                if n == 0:
                    t.lost.append(f"feed {key} well {w}")
                elif n > 1:
                    t.doubled.append(f"feed {key} well {w} ({n} times)")
        # Incubator: each plate fetched and stored once per feed.
        inc = read_jsonl(logs / "incubator_actions.jsonl")
        for action in ("retrieve", "store"):
            seen = Counter(int(e["slot"]) for e in inc if e.get("action") == action)
            for slot, want in self.planned.feeds_per_slot.items():
                got = seen[slot]
                if got < want:
                    t.lost.append(f"{action} of slot {slot}: {got} of {want}")
                elif got > want:
                    t.doubled.append(f"{action} of slot {slot}: {got} for {want}")
        # Carries: each once.
        carried = Counter(
            str(e["job"])
            for e in read_jsonl(logs / "operator_actions.jsonl")
            if e.get("action") == "move"
        )
        for key in self.planned.carries:
            if carried[key] == 0:
                t.lost.append(f"carry {key}")
            elif carried[key] > 1:
                t.doubled.append(f"carry {key} ({carried[key]} times)")
        # The arm: each plate placed on the deck, and back on the transfer station, once
        # per feed (from its own log; a plate put back by hand is not a place).
        arm = read_jsonl(logs / "arm_actions.jsonl")
        placed = [e for e in arm if e.get("command") == "PlacePlate" and e["result"] == "placed"]
        for slot, want in self.planned.feeds_per_slot.items() if self.arm else ():
            label = f"P{slot}"  # the practice incubator's label for the plate of slot N
            back = sum(1 for e in placed if e["plate"] == label and e["station"] == 1)
            to_deck = sum(1 for e in placed if e["plate"] == label and e["station"] != 1)
            for what, got in (("arm carry to the deck", to_deck), ("arm carry back", back)):
                if got < want:
                    t.lost.append(f"{what} of {label}: {got} of {want}")
                elif got > want:
                    t.doubled.append(f"{what} of {label}: {got} for {want}")
        bot = self.wc / "operator-bot.log"
        text = bot.read_text(encoding="utf-8") if bot.exists() else ""
        # Every prompt the simulated operator dealt with (one line each), and the person's.
        t.prompts = sum(1 for line in text.splitlines() if " prompt " in line) + self.person_acts
        return t


def short_protocol(
    now: datetime, feeds: int, gap_h: float, text: Callable[[str], str]
) -> tuple[str, str]:
    """``feeds`` full changes ``gap_h`` hours apart from 1.5 h after ``now`` (practice
    time): the protocol text (through ``text``, the tests' protocol_text) and day 0."""
    day0 = now.date()
    entries = []
    last = now
    for k in range(feeds):
        at = now + timedelta(hours=1.5 + gap_h * k)
        last = at
        entries.append(f'{{days: {(at.date() - day0).days}, at: "{at:%H:%M}", change: full}}')
    days = f'"0-{(last.date() - day0).days}"'
    body = text(
        f"""
        media: [{{days: {days}, medium: M1}}]
        factors: [{{compound: A, conc: 1 uM, days: {days}}}]
        feeds: [{", ".join(entries)}]
        """
    ).replace("window: 1 h", "window: 3 h")
    return body, day0.isoformat()


def chaos(
    live: LiveWorkcell,
    *,
    kills: int,
    crashes: int,
    rollbacks: int,
    limit_s: float,
    gap_s: tuple[float, float] = (1.5, 4.0),
) -> str:
    """Run the trial to its end with that much chaos spread at random moments; returns the
    run's final state ('completed' when all went through)."""
    events = ["kill"] * kills + ["crash"] * crashes + ["rollback"] * rollbacks
    live.rng.shuffle(events)
    deadline = WALL.monotonic() + limit_s
    next_event = WALL.monotonic() + live.rng.uniform(*gap_s)
    next_snap = WALL.monotonic() + 0.5
    while WALL.monotonic() < deadline:
        state = live.run_state()
        if state == "completed" and not events:
            return state
        now = WALL.monotonic()
        if now >= next_snap:
            try:
                live.snapshot()
            except sqlite3.Error:
                pass
            next_snap = now + 1.0
        if events and now >= next_event and state not in ("completed", "unknown"):
            what = events[0]
            done = True
            if what == "kill":
                live.kill_engine()
            elif what == "crash":
                live.crash_devices()
            else:
                done = live.rollback()
            if done:
                events.pop(0)
            next_event = WALL.monotonic() + live.rng.uniform(*gap_s)
        elif state == "completed" and events:
            events.clear()  # the run ended before all the chaos could happen
        live.person()
        WALL.sleep(0.3)
    return live.run_state()
