"""The practice workcell behind ``labctl simulators up``: simulated devices at fixed
addresses that a real ``labctl engine`` drives over the real transports, and a bot for the
operator's hands.

- the robot: a simulated Opentrons robot-server (OT-2) on ``http://127.0.0.1:BASE``;
- the incubator: a simulated Cytomat served on TCP at ``socket://127.0.0.1:BASE+1`` (the
  pyserial URL its real driver opens as it would a serial port);
- the arm: a simulated PreciseFlex PF400 on TCP ``127.0.0.1:BASE+2`` (motion) and
  ``BASE+3`` (status), that carries the plates between the incubator's transfer station and
  the robot's deck (unless made with ``arm=False``: the bot then carries them by hand);
- the operator: the workcell's ``operator`` driver asks through the run database; the bot
  (:mod:`~labctl.simulators.practice_bot`) answers there, does what needs hands and, when a
  move of the arm failed, looks at the arm (a plate left in the gripper goes back where it
  was picked) before it answers.

The workcell file it writes names only real drivers. The addresses never change, so a
simulator process killed and started again (same command) is found again by a running
engine, which reconnects by itself. What a device keeps survives in files under the
folder's ``devices/``: the Cytomat's slots, transfer station, operation under way and
setpoints (``inc-sim.state.json``), the plates on the robot's deck and the carries
(``operator.state.json``). The robot forgets its runs and protocols, as a real robot does
when it restarts. Each device appends its physical actions to its own log there
(``robot_actions.jsonl``, ``incubator_actions.jsonl``, ``arm_actions.jsonl``,
``operator_actions.jsonl``); the arm keeps its stations and gripper in ``pf400_state.json``; the bot
writes its decisions to ``operator-bot.log`` in the folder.

The folder is locked while it is served: a second ``simulators up`` on it is refused.
"""

from __future__ import annotations

import fcntl
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import IO

import yaml

from labctl.clock import Clock
from labctl.errors import LabctlError
from labctl.simulators.cytomat import (
    CytomatConfig,
    CytomatSim,
    cytomat_state,
    restore_cytomat,
)
from labctl.simulators.faults import ClimateConfig
from labctl.simulators.handover import TransferSpot
from labctl.simulators.opentrons_analysis import AnalysisService
from labctl.simulators.opentrons_instruments import InstrumentConfig
from labctl.simulators.pf400 import PF400Config, PF400Simulator
from labctl.simulators.practice_bot import BotConfig, OperatorBot
from labctl.simulators.practice_world import PlateWorld
from labctl.simulators.serial_link import SocketLink
from labctl.simulators.state_file import load_json, save_json
from labctl.simulators.workcell import (
    ARM,
    INCUBATOR,
    OPERATOR,
    ROBOT,
    arm_entry,
    arm_stations,
    deck_plates,
    simulated_robot,
)
from labctl.store import Store

__all__ = ["PracticeConfig", "PracticeError", "PracticeWorkcell", "practice_workcell"]

DEFAULT_PORT = 31950  # the robot-server's own port; the incubator gets the next one
# Real seconds the practice workcell gives the wire, whatever the pace: the drivers measure
# their time-outs on the shared clock, which runs `pace` times faster than the wire does.
REPLY_S = 0.5  # for one serial reply
RESTART_S = 30.0  # for a simulator process killed and started again during a move


class PracticeError(LabctlError):
    """The practice workcell cannot start (its folder is in use, a port is taken, ...)."""


@dataclass(frozen=True)
class PracticeConfig:
    """Where and how: ``folder`` holds the workcell file and the devices' files; ``port``
    is the robot's (the incubator's is the next); ``plates`` fill incubator slots 1..N on
    a first start; ``pace`` is the shared clock's (1: real time)."""

    folder: Path
    port: int = DEFAULT_PORT
    plates: int = 6
    pace: float = 1.0
    bot: BotConfig = BotConfig()
    arm: bool = True
    batch: int = 1  # plates the robot feeds in one run (its workcell ``batch`` setting)
    instruments: InstrumentConfig | None = None  # the robot's pipette per mount (None: default)


class PracticeWorkcell:
    """The simulators and the bot, on ``clock`` (the run database's), answering in ``store``.

    Use as a context manager: :meth:`start` binds the addresses and starts serving,
    :meth:`stop` ends every thread and the robot's analysis processes.
    """

    def __init__(
        self,
        clock: Clock,
        store: Store,
        config: PracticeConfig,
        *,
        echo: Callable[[str], None] | None = None,
    ) -> None:
        self.clock = clock
        self.cfg = config
        self.folder = Path(config.folder)
        self.devices_dir = self.folder / "devices"
        self.devices_dir.mkdir(parents=True, exist_ok=True)
        self._lock_file: IO[str] | None = None
        self._lock_folder()
        state_path = self.devices_dir / f"{INCUBATOR}.state.json"
        state = load_json(state_path)
        setpoints = (state or {}).get("setpoints") or {}
        saved_slots = [int(n) for n in ((state or {}).get("slots") or {})]
        slots = max([10, config.plates + 2, *saved_slots])
        climate = ClimateConfig(
            temperature=float(setpoints.get("temperature", 37.0)),
            co2=float(setpoints.get("co2", 5.0)),
        )
        self.incubator = CytomatSim(
            clock,
            CytomatConfig(slots=slots, require_init=False, climate=climate),
            name=INCUBATOR,
            plates={} if state else {n: f"P{n}" for n in range(1, config.plates + 1)},
            action_log=self.devices_dir / "incubator_actions.jsonl",
            on_change=lambda s: save_json(state_path, s),
        )
        self.restored = state is not None
        try:
            if state is not None:
                restore_cytomat(self.incubator, state)
        except (ValueError, KeyError, TypeError) as exc:
            self._unlock()
            raise PracticeError(
                f"{state_path}: cannot be restored ({exc}); delete it to start the incubator afresh"
            ) from None
        self.link = SocketLink(self.incubator, port=config.port + 1)
        self.analysis = AnalysisService()  # its own: stop() ends its processes
        self.robot = simulated_robot(
            clock, self.analysis, self.devices_dir, instruments=config.instruments
        )
        # The arm reaches the incubator's transfer station through the incubator (one place).
        self.arm: PF400Simulator | None = None
        self.stations = arm_stations(1, config.batch)
        if config.arm:
            self.arm = PF400Simulator(
                clock,
                PF400Config(stations=len(self.stations)),
                name=ARM,
                state_dir=self.devices_dir,
                action_log=self.devices_dir / "arm_actions.jsonl",
                linked={self.stations[f"{INCUBATOR}/transfer"]: TransferSpot(self.incubator)},
            )
        self.world = PlateWorld(
            clock,
            self.incubator,
            robot=ROBOT,
            state=self.devices_dir / f"{OPERATOR}.state.json",
            action_log=self.devices_dir / "operator_actions.jsonl",
            name=OPERATOR,
            arm=self.arm,
            stations=self.stations,
            incubator_log=self.devices_dir / "incubator_actions.jsonl",
        )
        self.bot = OperatorBot(
            store,
            clock,
            self.world,
            robot_log=self.devices_dir / "robot_actions.jsonl",
            robot_sync=self.robot.sync,
            robot_status=self._robot_status,
            log=self.folder / "operator-bot.log",
            config=config.bot,
            echo=echo,
        )
        if state is None:
            save_json(state_path, cytomat_state(self.incubator))

    # ---- life -----------------------------------------------------------------------------

    def start(self) -> PracticeWorkcell:
        """Start the robot's analysis processes, bind both addresses and start the bot.
        Raises PracticeError when an address is taken."""
        self.analysis.start()
        self.analysis.speculate(True)  # analyse the next tip values ahead of need
        try:
            self.robot.start(port=self.cfg.port)
        except OSError as exc:
            self.stop()
            raise PracticeError(self._taken(self.cfg.port, exc)) from None
        try:
            self.link.start()
        except OSError as exc:
            self.stop()
            raise PracticeError(self._taken(self.cfg.port + 1, exc)) from None
        if self.arm is not None:
            try:
                self.arm.start(port=self.cfg.port + 2, status_port=self.cfg.port + 3)
            except OSError as exc:
                self.stop()
                raise PracticeError(self._taken(self.cfg.port + 2, exc)) from None
        self.bot.start()
        return self

    def stop(self) -> None:
        """Stop the bot, both servers and the analysis processes (idempotent)."""
        self.bot.stop()
        if self.arm is not None:
            self.arm.stop()
        self.link.stop()
        self.robot.stop()
        self.analysis.close()
        self._unlock()

    def __enter__(self) -> PracticeWorkcell:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _taken(self, port: int, exc: OSError) -> str:
        return (
            f"cannot listen on 127.0.0.1:{port} ({exc.strerror}): another program uses it; "
            f"pass --port with another base (it takes {self.cfg.port} to "
            f"{self.cfg.port + (3 if self.arm is not None else 1)})"
        )

    def _lock_folder(self) -> None:
        path = self.folder / ".simulators.lock"
        fh = open(path, "a+", encoding="utf-8")  # noqa: SIM115 - held while serving
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            fh.seek(0)
            who = fh.read().strip() or "another process"
            fh.close()
            raise PracticeError(
                f"{self.folder} is served already (by {who}): stop that one first, or use "
                "another --out"
            ) from None
        fh.seek(0)
        fh.truncate()
        fh.write(f"labctl simulators up, process {os.getpid()}\n")
        fh.flush()
        self._lock_file = fh

    def _unlock(self) -> None:
        if self._lock_file is not None:
            self._lock_file.close()  # releases the lock
            self._lock_file = None

    def _robot_status(self, run_id: str) -> str | None:
        try:
            return self.robot.run_status(run_id)
        except KeyError:  # not a run this robot knows (made before it restarted)
            return None

    # ---- the workcell file ----------------------------------------------------------------

    @property
    def robot_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.port}"

    @property
    def incubator_url(self) -> str:
        return f"socket://127.0.0.1:{self.cfg.port + 1}"

    def workcell_text(self) -> str:
        """The workcell file (DEVICES.md section 10) that points the real drivers at the
        simulators. Time-outs the drivers measure on the clock leave the wire the same real
        time at any pace: a serial reply REPLY_S, a move RESTART_S beyond its own."""
        pace = self.cfg.pace
        wc = {
            "name": "practice",
            "timezone": "UTC",
            "devices": {
                ROBOT: {
                    "driver": "opentrons",
                    "url": self.robot_url,
                    "robot": "OT-2",
                    "deck": {"plate": list(deck_plates(self.cfg.batch))},
                    "check": False,  # the simulated robot analyses every protocol itself
                    **({"batch": self.cfg.batch} if self.cfg.batch > 1 else {}),
                },
                INCUBATOR: {
                    "driver": "cytomat",
                    "port": self.incubator_url,
                    "slots": self.incubator.config.slots,
                    "setpoints": {"temperature": "37 degC", "co2": "5%"},
                    "reply_timeout_s": round(max(1.0, REPLY_S * pace), 3),
                    "move_timeout_s": round(120.0 + RESTART_S * pace, 3),
                },
                **self._arm_entry(pace),
                OPERATOR: {"driver": "operator"},
            },
            "operators": {"hours": {"mon-sun": "00:00-24:00"}},
        }
        head = (
            "# Written by `labctl simulators up`: the practice workcell. The devices are\n"
            f"# simulators on 127.0.0.1 ({self.robot_url}, {self.incubator_url});\n"
            "# the drivers are the real ones."
            + (f" The clock runs {pace:g}x (time-outs scaled to match).\n" if pace != 1 else "\n")
        )
        return head + yaml.safe_dump(wc, sort_keys=False)

    def _arm_entry(self, pace: float) -> dict[str, object]:
        if self.arm is None:
            return {}
        timeout = round(120.0 + RESTART_S * pace, 3)
        return arm_entry(
            self.cfg.port + 2, self.cfg.port + 3, motion_timeout_s=timeout, stations=self.stations
        )


def practice_workcell(
    clock: Clock,
    store: Store,
    *,
    folder: Path,
    port: int = DEFAULT_PORT,
    plates: int = 6,
    pace: float = 1.0,
    answers: bool = True,
    echo: Callable[[str], None] | None = None,
    arm: bool = True,
    batch: int = 1,
    instruments: InstrumentConfig | None = None,
) -> PracticeWorkcell:
    """The ``practice_workcell`` plugin (``labctl simulators up``): a workcell not yet
    started (see :class:`PracticeWorkcell` and :class:`PracticeConfig`)."""
    config = PracticeConfig(
        folder, port, plates, pace, BotConfig(answers=answers), arm, batch, instruments
    )
    return PracticeWorkcell(clock, store, config, echo=echo)
