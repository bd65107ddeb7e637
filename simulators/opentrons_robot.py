"""Simulated Opentrons robot-server (OT-2 or Flex) speaking the HTTP API of DEVICES.md section 1.

:class:`RobotSimulator` is a simulated robot served over HTTP on 127.0.0.1. Its parts, each
in a module of its own:

- :mod:`~labctl.simulators.opentrons_http`: the HTTP layer (parsing, the route table, replies
  and robot-server's error bodies);
- :mod:`~labctl.simulators.opentrons_robot_model`: the robot (protocols, runs, faults, the
  action log), with :mod:`~labctl.simulators.opentrons_protocols`,
  :mod:`~labctl.simulators.opentrons_runs`, :mod:`~labctl.simulators.opentrons_run_engine`
  and :mod:`~labctl.simulators.opentrons_views`;
- :mod:`~labctl.simulators.opentrons_analysis`: the analysis service (opentrons in child
  processes, the caches and the tip model), one per program unless a robot is given its own.

Attached pipettes: ``instruments`` (``--pipette`` on the command line) names the pipette on
each mount; ``GET /instruments`` shows them and a run that loads another fails at that
``loadPipette`` (see :mod:`~labctl.simulators.opentrons_instruments`).

Run-time parameters (Protocol API 2.18+): values sent at upload (form field
``runTimeParameterValues``) are analysed with, and re-uploading the same files with other values
appends a new analysis, as robot-server does; values sent with ``POST /runs`` are the run's: it
echoes them in ``runTimeParameters`` and plays the protocol as opentrons runs it with them.

A program that starts the simulator must guard its main module (``if __name__ ==
"__main__":``), as the analysis processes may re-import it.
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path

from labctl.clock import RealClock
from labctl.simulators.opentrons_http import HttpServer, Reply, handle_request
from labctl.simulators.opentrons_instruments import DEFAULT_INSTRUMENTS, MOUNTS, attach
from labctl.simulators.opentrons_robot_model import Robot
from labctl.simulators.opentrons_runs import Faults
from labctl.simulators.opentrons_wire import ROBOT_TYPES

__all__ = ["Faults", "RobotSimulator", "main"]


class RobotSimulator(Robot):
    """An Opentrons robot-server driven by an injected clock: a
    :class:`~labctl.simulators.opentrons_robot_model.Robot` (see it for the options) served
    over HTTP between :meth:`start` and :meth:`stop`."""

    _server: HttpServer | None = None  # while serving

    def start(self, host: str = "127.0.0.1", port: int = 0) -> RobotSimulator:
        """Bind ``host``:``port`` (0: any free port) and serve in a background thread;
        returns self. Does nothing if already serving."""
        if self._server is None:
            self._server = HttpServer(self, host, port)
            self._server.start()
        return self

    def stop(self) -> None:
        """Stop serving and close the socket (state is kept; the action log is brought up to
        date and its file closed)."""
        self.sync()
        server, self._server = self._server, None
        if server is not None:
            server.stop()
        self.log.close()

    def __enter__(self) -> RobotSimulator:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        return self._serving().port

    @property
    def url(self) -> str:
        """``http://<host>:<port>`` of the running server."""
        return self._serving().url

    def _serving(self) -> HttpServer:
        if self._server is None:
            raise RuntimeError("the robot simulator is not started")
        return self._server

    def handle_request(
        self, method: str, target: str, headers: Mapping[str, str], body: bytes
    ) -> Reply | None:
        """Answer one request as the server would, without HTTP (None: no reply, offline)."""
        return handle_request(self, method, target, headers, body)


def main(argv: Sequence[str] | None = None) -> int:
    """Serve a simulated robot in real time until interrupted (Ctrl-C)."""
    parser = argparse.ArgumentParser(
        prog="python -m labctl.simulators.opentrons_robot",
        description="Simulated Opentrons robot-server (HTTP API, DEVICES.md section 1).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=31950)
    parser.add_argument("--robot", choices=sorted(ROBOT_TYPES), default="OT-2")
    parser.add_argument(
        "--time-scale",
        type=float,
        default=1.0,
        help="multiply every simulated duration (0.01 = 100x faster)",
    )
    parser.add_argument(
        "--analysis-delay", type=float, default=2.0, help="seconds a new analysis stays pending"
    )
    parser.add_argument(
        "--pipette",
        action="append",
        default=[],
        metavar="MOUNT=NAME",
        help="the pipette on a mount, e.g. right=p300_single_v1 or left=none (repeatable;"
        " mounts not named keep the default: p20_single_gen2 left, p1000_single_gen2 right"
        " on an OT-2, flex_1channel_50 and flex_1channel_1000 on a Flex)",
    )
    parser.add_argument(
        "--action-log",
        type=Path,
        default=None,
        help="append completed physical commands here as JSON lines",
    )
    args = parser.parse_args(argv)
    instruments: dict[str, str | None] = dict(DEFAULT_INSTRUMENTS[args.robot])
    for item in args.pipette:
        mount, sep, name = item.partition("=")
        if not sep or mount not in MOUNTS or not name:
            parser.error(f"--pipette {item!r}: expected left=NAME or right=NAME")
        instruments[mount] = None if name.lower() == "none" else name
    try:
        attach(args.robot, instruments)
    except ValueError as exc:
        parser.error(f"--pipette: {exc}")
    clock = RealClock()
    sim = RobotSimulator(
        clock,
        args.robot,
        instruments=instruments,
        analysis_delay_s=args.analysis_delay,
        action_log=args.action_log,
        time_scale=args.time_scale,
        background_analysis=True,
    )
    sim.analysis.warm_up()
    sim.start(args.host, args.port)
    print(f"simulated {args.robot} robot-server on {sim.url}", flush=True)
    try:
        while True:
            clock.sleep(3600.0)
    except KeyboardInterrupt:
        pass
    finally:
        sim.stop()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
