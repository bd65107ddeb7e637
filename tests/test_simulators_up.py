"""``labctl simulators up`` as an operator uses it: separate processes for the simulators,
``labctl run`` and ``labctl engine``, on the practice clock, checked against the devices'
OWN action logs.

One scenario (a short protocol, two plates, three feeds): every feed happens exactly once
(robot runs, incubator fetches and stores, the simulated operator's carries); the
simulators are killed (SIGKILL) between two feeds and started again with the same command,
and the run still completes with nothing lost or doubled; a killed simulators process and a
stopped one (Ctrl-C) leave no process of theirs behind.
"""

from __future__ import annotations

import json
import os
import random
import signal
import socket
import subprocess
import sys
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from labctl.clock import PacedClock, RealClock
from labctl.drivers.opentrons_uploads import protocol_filename
from labctl.store import Store
from labctl.workcell import load_workcell
from tests.helpers import protocol_text

pytestmark = pytest.mark.skipif(
    not sys.platform.startswith("linux"), reason="reads the process tree from /proc"
)

PACE = 1440.0  # a day a minute, as an operator practises
PLATES = 2
WALL = RealClock()


def wait_for(what: str, ok: Callable[[], Any], timeout_s: float = 30.0) -> Any:
    """``ok()``'s first true value, looked for every 50 ms; fails naming ``what``."""
    deadline = WALL.monotonic() + timeout_s
    while True:
        value = ok()
        if value:
            return value
        if WALL.monotonic() > deadline:
            pytest.fail(f"no {what} within {timeout_s:g} s")
        WALL.sleep(0.05)


def free_base_port() -> int:
    """A free port with the next one free too (the robot's and the incubator's), below the
    range the system hands out to outgoing connections: else a client socket (the engine's)
    could take it while the simulators are down."""
    low = 32768
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    if ranges.exists():
        low = int(ranges.read_text().split()[0])
    rng = random.Random()
    for _ in range(200):
        port = rng.randrange(max(1024, low - 12000), low - 2)
        try:
            for p in (port, port + 1):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", p))
        except OSError:
            continue
        return port
    raise AssertionError("no two free ports in a row")


def descendants(pid: int) -> set[int]:
    """Every process below ``pid`` (from /proc)."""
    children: dict[int, set[int]] = {}
    for d in Path("/proc").iterdir():
        if not d.name.isdigit():
            continue
        try:
            stat = (d / "stat").read_text()
        except OSError:
            continue
        ppid = int(stat.rsplit(")", 1)[1].split()[1])
        children.setdefault(ppid, set()).add(int(d.name))
    out: set[int] = set()
    todo = [pid]
    while todo:
        for c in children.get(todo.pop(), ()):
            if c not in out:
                out.add(c)
                todo.append(c)
    return out


def alive(pids: set[int]) -> set[int]:
    """Those of ``pids`` that still run (zombies count as ended)."""
    left = set()
    for p in pids:
        try:
            state = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if state != "Z":
            left.add(p)
    return left


class Processes:
    """The processes a test starts, each with its output in a file; all ended at teardown."""

    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.started: list[subprocess.Popen[bytes]] = []
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}

    def start(self, name: str, *args: str) -> tuple[subprocess.Popen[bytes], Path]:
        log = self.tmp / f"{name}.out"
        with log.open("ab") as fh:
            p = subprocess.Popen(
                [sys.executable, "-m", "labctl", *args],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.tmp,
            )
        self.started.append(p)
        return p, log

    def run(self, *args: str) -> str:
        done = subprocess.run(
            [sys.executable, "-m", "labctl", *args],
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.tmp,
            timeout=60,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    def end_all(self) -> None:
        for p in self.started:
            if p.poll() is None:
                p.kill()
                p.wait(10)


@pytest.fixture
def procs(tmp_path: Path) -> Iterator[Processes]:
    ps = Processes(tmp_path)
    yield ps
    ps.end_all()


def read_jsonl(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(x) for x in path.read_text(encoding="utf-8").splitlines() if x.strip()]


def short_protocol(now: datetime) -> tuple[str, str]:
    """Three feeds 2.5 h apart from 1.5 h after ``now`` (the practice clock's), on the day
    of ``now`` and maybe the next: the protocol text and day 0."""
    day0 = now.date()
    feeds = []
    for k in range(3):
        at = now + timedelta(hours=1.5 + 2.5 * k)
        feeds.append(f'{{days: {(at.date() - day0).days}, at: "{at:%H:%M}", change: full}}')
    last = (now + timedelta(hours=1.5 + 5.0)).date()
    days = f'"0-{(last - day0).days}"'
    text = protocol_text(
        f"""
        media: [{{days: {days}, medium: M1}}]
        factors: [{{compound: A, conc: 1 uM, days: {days}}}]
        feeds: [{", ".join(feeds)}]
        """
    ).replace("window: 1 h", "window: 3 h")
    return text, day0.isoformat()


def test_practice_workcell_runs_feeds_once_through_a_kill_and_leaves_no_process(
    tmp_path: Path, procs: Processes
) -> None:
    out, db = tmp_path / "wc", tmp_path / "wc" / "run.db"
    port = free_base_port()
    up = ("simulators", "up", "--out", str(out), "--db", str(db), "--port", str(port))
    up += ("--pace", f"{PACE:g}", "--plates", str(PLATES), "--no-arm")  # people carry here
    sims, sims_out = procs.start("sims", *up)
    wait_for("banner", lambda: "labctl answer PROMPT CHOICE" in sims_out.read_text())
    workcell = out / "workcell.yaml"
    devices = load_workcell(workcell).devices  # only real drivers, at the fixed addresses
    assert {d.driver for d in devices.values()} == {"opentrons", "cytomat", "operator"}
    assert devices["ot2-sim"].settings["url"] == f"http://127.0.0.1:{port}"
    assert devices["inc-sim"].settings["port"] == f"socket://127.0.0.1:{port + 1}"

    with Store.open(db, WALL, create=False) as store:
        epoch = store.clock_epoch()
    assert epoch is not None and epoch.pace == PACE
    clock = PacedClock.shared(epoch)
    proto, day0 = short_protocol(clock.now())
    (tmp_path / "short.yaml").write_text(proto)
    procs.run(
        "run", "short.yaml", "--workcell", str(workcell), "--db", str(db),
        "--plates", str(PLATES), "--start", day0, "--name", "practice",
    )  # fmt: skip
    engine, engine_out = procs.start(
        "engine", "engine", "--workcell", str(workcell), "--db", str(db)
    )
    logs = out / "devices"
    inc_log = logs / "incubator_actions.jsonl"

    def stores() -> int:
        return sum(1 for e in read_jsonl(inc_log) if e["action"] == "store")

    # The first feed done on both plates (both back in their slots): kill the simulators.
    wait_for("the first feed's stores", lambda: stores() >= PLATES, 60)
    tree = descendants(sims.pid)
    assert tree, "the simulators run their robot's analysis processes"
    sims.send_signal(signal.SIGKILL)
    sims.wait(10)
    wait_for("the killed simulators' processes to end", lambda: not alive(tree), 10)

    sims, sims_out = procs.start("sims-again", *up)  # the same command
    wait_for("banner again", lambda: "labctl answer PROMPT CHOICE" in sims_out.read_text())
    assert "(restored)" in sims_out.read_text()

    def run_state() -> str:
        with Store.open(db, WALL, create=False) as store:
            return store.get_run(1).state

    wait_for("the run to complete", lambda: run_state() == "completed", 60)

    # Every feed once, from the devices' own logs.
    with Store.open(db, WALL, create=False) as store:
        jobs = store.jobs(1)
    assert {j.state for j in jobs} == {"done"}
    lh_keys = [j.spec["key"] for j in jobs if j.op == "lh_run"]
    carry_keys = [j.spec["key"] for j in jobs if j.op == "prompt"]  # to the deck and back
    assert len(lh_keys) == 3 * PLATES and len(carry_keys) == 2 * 3 * PLATES
    robot = read_jsonl(logs / "robot_actions.jsonl")
    files = {e["protocolId"]: e["files"][0] for e in robot if e["event"] == "protocol_upload"}
    runs = {e["runId"]: files[e["protocolId"]] for e in robot if e["event"] == "run_created"}
    played = Counter(
        runs[e["runId"]] for e in robot if e["event"] == "run_action" and e["actionType"] == "play"
    )
    succeeded = Counter(
        runs[e["runId"]]
        for e in robot
        if e["event"] == "run_finished" and e["status"] == "succeeded"
    )
    expected = Counter(protocol_filename(k) for k in lh_keys)
    assert played == expected and succeeded == expected
    inc = read_jsonl(inc_log)
    assert Counter((e["action"], e["slot"]) for e in inc if e["action"] != "init") == Counter(
        {(a, s): 3 for a in ("retrieve", "store") for s in range(1, PLATES + 1)}
    )
    seqs = [e["seq"] for e in inc]
    assert seqs == sorted(set(seqs))  # each operation logged once, in order
    carries = Counter(e["job"] for e in read_jsonl(logs / "operator_actions.jsonl"))
    assert carries == Counter(carry_keys)  # each carry once
    bot = (out / "operator-bot.log").read_text()
    assert "left to a person" not in bot and "rejected" not in bot

    # Ctrl-C stops the simulators and everything they started.
    tree = descendants(sims.pid)
    sims.send_signal(signal.SIGINT)
    assert sims.wait(20) == 0
    assert "simulators stopped" in sims_out.read_text()
    wait_for("the stopped simulators' processes to end", lambda: not alive(tree), 10)
    engine.send_signal(signal.SIGTERM)
    assert engine.wait(20) == 0, engine_out.read_text()
