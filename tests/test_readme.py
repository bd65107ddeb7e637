"""Every command block of README.md, run as written, exits as the README says.

Each ```sh block is run line by line in a temporary folder that looks like the labctl
folder (``protocols/`` and ``scenarios/`` beside it), with the venv's ``labctl`` first on
PATH and labctl's data, config and log folders (and so its default database and sign-in
sessions) in the temporary folder. What the test supplies, and why:

- ``my_protocol.yaml`` and ``workcell.yaml`` are the reader's own files: the test writes
  them (see :data:`MY_PROTOCOL`; the workcell is the file of a practice workcell the test
  starts on free ports, so that ``labctl engine`` and ``devices check`` reach devices on
  this machine and nowhere else).
- Absolute folders are moved into the temporary folder: ``/tmp/simwc`` and ``/srv/labctl``.
- A command that asks for a password gets ``--password-stdin`` and the password on its
  standard input (the README's note: scripts give it that way).
- A line with ``;`` is two commands, run one after the other.
- Servers (``labctl simulators up``, ``labctl engine``) run until their first lines show
  they are up, then get SIGTERM and must stop cleanly (exit 0); the README's simulators
  keep running through the block that follows them, as in the README's three terminals.
- Skipped, with the reason in :data:`SKIPPED`: the install-and-test lines (CI runs exactly
  those), and the console (a Qt window; tests/test_console_*.py drive it).

Every other command must exit as the README says: 0, or the code :data:`EXPECTED` gives
with the README's reason (a command queued with no engine is 3, an example id that is no
prompt in a new database is 1, a placeholder such as PROMPT is a usage error, 2). A block
this file does not know fails the test: say here how to run it.
"""

from __future__ import annotations

import os
import queue
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from labctl.clock import RealClock
from tests.test_simulate_faults import protocol

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
KRIKS = ROOT / "protocols" / "kriks2011_da.yaml"
PASSWORD = "correct horse battery"
BIN = Path(sys.executable).parent

#: The reader's protocol, per block: the scientists' and operators' blocks name Kriks's
#: parameter (chir) and its tasks (d12-feed-0900, the FOXA2 QC); the dry runs take a
#: protocol of two days (the scenario's fault on day 1 falls inside it), so that five dry
#: runs, two of them on 24 plates, fit the test's time.
MY_PROTOCOL = {"scientists": KRIKS.read_text(encoding="utf-8"), "dry runs": protocol(1)}

#: Blocks not run, and why (by the first command of the block).
SKIPPED = {
    "python3 -m venv .venv": "makes a venv, installs labctl and runs the whole test suite: "
    "CI runs exactly these lines (.ci/run); its dry run of Kriks on 6 plates runs below",
    "labctl console": "opens the Qt console; tests/test_console_*.py drive it offscreen",
}

#: Commands that do not exit 0, with the code the README gives them and why.
EXPECTED = {
    # A placeholder the README asks the reader to fill in: argparse's usage error.
    "labctl answer PROMPT CHOICE": 2,
    # Example ids: a new database has no prompt 12 or 14 (invalid input).
    "labctl answer 12 retry": 1,
    "labctl answer 14 --value FOXA2_LMX1A_pct=72": 1,
    # With no engine running a command stays queued (the README: exit 3).
    'labctl pause 1 --reason "incubator cleaning"': 3,
    "labctl resume 1": 3,
    'labctl skip 1 d12-feed-0900 --plate P3 --reason "plate contaminated"': 3,
    'labctl abort 1 --reason "..." --yes': 3,
    # Signed in as olly, an operator: "a supervisor also ... releases held runs" (refused, 1).
    'labctl release 1 --reason "QC re-stained: 68%"': 1,
}

#: Commands that ask for a password (the README: "asks a password", "signed").
NEEDS_PASSWORD = (
    "labctl setup",
    "labctl login",
    "labctl users add",
    "labctl protocol release",
    "labctl release",
    "labctl skip",
    "labctl abort",
)

#: A server's first line, and the line after which it is up, by the command's start.
SERVERS = {
    "labctl simulators up": (
        re.compile(r"practice workcell up in "),
        re.compile(r"Ctrl-C stops the simulators"),
    ),
    "labctl engine": (re.compile(r"engine on .* with devices "),) * 2,
}
PRACTICE_PORTS = range(31950, 31954)  # the README's practice workcell: fixed addresses


# --- reading the README -------------------------------------------------------------------


def blocks() -> list[str]:
    text = README.read_text(encoding="utf-8")
    return [m.group(1) for m in re.finditer(r"```sh\n(.*?)```", text, re.S)]


def commands(block: str) -> list[str]:
    """The block's commands: comments dropped, a ';' line split in two."""
    found = []
    for line in block.splitlines():
        words = shlex.split(line, comments=True)
        if not words:
            continue
        found += [c.strip() for c in shlex.join(words).split(" ';' ")]
    return [_readme_spelling(c) for c in found]


def _readme_spelling(cmd: str) -> str:
    """The command as the README spells it (quotes as written), to look it up."""
    return " ".join(
        f'"{w}"' if (" " in w or w == "...") and not w.startswith("--") else w
        for w in shlex.split(cmd)
    )


def block_named(first: str) -> str:
    [block] = [b for b in blocks() if commands(b) and commands(b)[0].startswith(first)]
    return block


# --- running ------------------------------------------------------------------------------


@dataclass
class Shell:
    """Where the README's commands run: a folder like the labctl folder, labctl's own
    folders inside it, the environment the README's ``export`` lines change."""

    root: Path
    env: dict[str, str] = field(default_factory=dict)
    servers: list[subprocess.Popen[str]] = field(default_factory=list)
    ran: list[str] = field(default_factory=list)
    keep_engine: bool = False  # the engine keeps its terminal (else it is stopped once up)

    @property
    def cwd(self) -> Path:
        return self.root / "labctl"

    def path(self, cmd: str) -> str:
        """Absolute folders of the README, moved into the temporary folder."""
        return cmd.replace("/tmp/simwc", str(self.root / "simwc")).replace(
            "/srv/labctl", str(self.root / "srv" / "labctl")
        )

    def run(self, cmd: str, *, timeout: float = 180.0) -> subprocess.CompletedProcess[str]:
        """One README command; returns its result after checking its exit code."""
        self.ran.append(cmd)
        if cmd.startswith("export "):
            name, _, value = self.path(cmd.removeprefix("export ")).partition("=")
            self.env[name] = value
            return subprocess.CompletedProcess(cmd, 0, "", "")
        argv = shlex.split(self.path(cmd))
        stdin = ""
        if cmd.startswith(NEEDS_PASSWORD) and "--password-stdin" not in argv:
            argv.append("--password-stdin")
            stdin = PASSWORD + "\n"
        if any(cmd.startswith(s) for s in SERVERS):
            return self.serve(cmd, argv)
        res = subprocess.run(argv, cwd=self.cwd, env=self.env, input=stdin, text=True,
                             capture_output=True, timeout=timeout)  # fmt: skip
        want = EXPECTED.get(cmd, 0)
        assert res.returncode == want, (
            f"README: `{cmd}` exited {res.returncode}, not {want}\n{res.stdout}\n{res.stderr}"
        )
        assert "Traceback" not in res.stderr and "internal error" not in res.stderr
        return res

    def serve(self, cmd: str, argv: list[str]) -> subprocess.CompletedProcess[str]:
        """Start a server: its first line must say what it is, and it must be up within
        60 s; the engine is then stopped again unless it keeps its terminal."""
        first, ready = next(p for s, p in SERVERS.items() if cmd.startswith(s))
        proc = subprocess.Popen(argv, cwd=self.cwd, env=self.env, text=True, bufsize=1,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
        self.servers.append(proc)
        lines: queue.Queue[str] = queue.Queue()
        # Everything it prints is read, so that it never blocks on a full pipe.
        threading.Thread(target=_pump, args=(proc, lines), daemon=True).start()
        seen: list[str] = []
        wall = RealClock()
        deadline = wall.monotonic() + 60.0
        while (left := deadline - wall.monotonic()) > 0:
            try:
                line = lines.get(timeout=left)
            except queue.Empty:
                break
            if line == "":
                break  # it ended
            if not seen and not first.search(line):
                continue  # a warning before its first line (a protocol's DMSO, ...)
            seen.append(line)
            if ready.search(line):
                if cmd.startswith("labctl engine") and not self.keep_engine:
                    assert self.stop(proc) == 0
                return subprocess.CompletedProcess(cmd, 0, "".join(seen), "")
        self.stop(proc)
        raise AssertionError(f"README: `{cmd}` did not come up:\n{''.join(seen)}")

    def stop(self, proc: subprocess.Popen[str]) -> int:
        """SIGTERM, as the README's Ctrl-C; the server must end by itself, cleanly."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)  # its own group, started by this test
            proc.wait()
            raise AssertionError(f"{proc.args} did not stop on SIGTERM") from None
        if proc in self.servers:
            self.servers.remove(proc)
        return code

    def stop_all(self) -> None:
        for proc in list(reversed(self.servers)):
            assert self.stop(proc) == 0, f"{proc.args} did not stop cleanly"

    def run_block(self, block: str) -> None:
        for cmd in commands(block):
            self.run(cmd)


@pytest.fixture
def shell(tmp_path: Path) -> Iterator[Shell]:
    home = tmp_path / "home"
    env = {
        "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '/usr/bin:/bin')}",
        "HOME": str(home),
        "XDG_DATA_HOME": str(home / "data"),
        "XDG_CONFIG_HOME": str(home / "config"),
        "XDG_STATE_HOME": str(home / "state"),
        "XDG_CACHE_HOME": str(home / "cache"),
        "LANG": "C.UTF-8",
        "QT_QPA_PLATFORM": "offscreen",
        "OT_API_CONFIG_DIR": str(home / "opentrons"),
    }
    folder = tmp_path / "labctl"
    folder.mkdir()
    for name in ("protocols", "scenarios"):
        (folder / name).symlink_to(ROOT / name)
    sh = Shell(tmp_path, env)
    try:
        yield sh
    finally:
        for proc in list(sh.servers):  # a failed test still leaves no process behind
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def _pump(proc: subprocess.Popen[str], lines: queue.Queue[str]) -> None:
    """Every line a server prints, then "" when it ends."""
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.put(line)
    lines.put("")


def _ports_free(ports: range) -> bool:
    for port in ports:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def _free_base_port() -> int:
    for _ in range(50):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = int(s.getsockname()[1])
        if base < 65000 and _ports_free(range(base, base + 4)):
            return base
    raise AssertionError("no four free ports in a row")


# --- the blocks ---------------------------------------------------------------------------


KNOWN = (
    "python3 -m venv .venv",
    "labctl validate my_protocol.yaml",
    "labctl simulate my_protocol.yaml --plates 6",
    "labctl simulators up --out /tmp/simwc --db /tmp/simwc/run.db --pace 1440",
    "labctl run protocols/kriks2011_da.yaml --workcell /tmp/simwc/workcell.yaml",
    "mkdir -p /srv/labctl",
    "labctl run my_protocol.yaml --workcell workcell.yaml",
    "labctl console",
)


def test_every_readme_block_is_one_this_test_runs_or_skips_with_a_reason() -> None:
    firsts = [commands(b)[0] for b in blocks()]
    unknown = [f for f in firsts if not any(f.startswith(k) for k in KNOWN)]
    assert unknown == [], "a README block this test does not know: say here how to run it"
    assert len(firsts) == len(KNOWN)


def test_readme_exit_code_table_is_labctls() -> None:
    from labctl.cli.main import EXIT_CODES

    text = README.read_text(encoding="utf-8")
    rows = re.findall(r"^\| (\d+) \| (.+) \|$", text, re.M)
    assert [int(code) for code, _ in rows] == [0, 1, 2, 3, 70]
    table = " ".join(EXIT_CODES.split())
    for code, meaning in rows:
        words = " ".join(meaning.replace("`", "").split())
        assert f"{code} {words}" in table, code


@pytest.mark.parametrize("first", sorted(SKIPPED))
def test_skipped_blocks_say_why(first: str) -> None:
    assert block_named(first)
    pytest.skip(SKIPPED[first])


@pytest.mark.slow
def test_the_first_line_dry_run_of_kriks(shell: Shell) -> None:
    # The README's first line ends with this dry run (its venv and install are CI's).
    [line] = [c for c in blocks()[0].splitlines() if "labctl simulate" in c]
    cmd = "labctl " + line.split(".venv/bin/labctl ", 1)[1]
    assert cmd == "labctl simulate protocols/kriks2011_da.yaml --plates 6"
    res = shell.run(cmd)
    assert "run completed: 186 of 186 tasks done;" in res.stdout


def test_the_scientists_block(shell: Shell) -> None:
    (shell.cwd / "my_protocol.yaml").write_text(MY_PROTOCOL["scientists"], encoding="utf-8")
    shell.run_block(block_named("labctl validate my_protocol.yaml"))
    assert (shell.cwd / "prep.html").stat().st_size > 0
    assert (shell.cwd / "schedule.png").read_bytes().startswith(b"\x89PNG")


def test_the_dry_runs_block(shell: Shell) -> None:
    if not _ports_free(PRACTICE_PORTS):
        pytest.skip("the practice workcell's fixed ports 31950-31953 are taken on this machine")
    (shell.cwd / "my_protocol.yaml").write_text(MY_PROTOCOL["dry runs"], encoding="utf-8")
    block = block_named("labctl simulate my_protocol.yaml --plates 6")
    shell.run_block(block)
    shell.stop_all()
    faults = next(c for c in shell.ran if "--faults" in c)
    assert "scenarios/incubator_door_open.yaml" in faults


def test_the_practice_workcell_blocks(shell: Shell) -> None:
    if not _ports_free(PRACTICE_PORTS):
        pytest.skip("the practice workcell's fixed ports 31950-31953 are taken on this machine")
    up = block_named("labctl simulators up --out /tmp/simwc --db /tmp/simwc/run.db")
    [started] = [shell.run(c) for c in commands(up)]
    # "It prints what to type next, as here": the README's next block, line for line.
    nxt = block_named("labctl run protocols/kriks2011_da.yaml --workcell /tmp/simwc/")
    printed = [line.strip() for line in started.stdout.splitlines()]
    for line in nxt.strip().splitlines():
        assert shell.path(line.removeprefix("# ")) in printed, line
    shell.keep_engine = True  # the engine keeps its terminal while status and prompts run
    shell.run_block(nxt)
    assert "engine " in shell.run("labctl status").stdout.splitlines()[0]
    shell.stop_all()


def test_the_accounts_and_operator_blocks(shell: Shell) -> None:
    (shell.cwd / "my_protocol.yaml").write_text(MY_PROTOCOL["scientists"], encoding="utf-8")
    # The reader's workcell: a practice workcell on free ports (devices on this machine).
    port = _free_base_port()
    bay = shell.root / "bay"
    shell.run(f"labctl simulators up --out {bay} --port {port}")
    shutil.copy(bay / "workcell.yaml", shell.cwd / "workcell.yaml")
    shell.run_block(block_named("mkdir -p /srv/labctl"))
    assert shell.run("labctl whoami").stdout.startswith("olly")
    shell.run_block(block_named("labctl run my_protocol.yaml --workcell workcell.yaml"))
    assert (shell.cwd / "batch.html").stat().st_size > 0
    shell.stop_all()
