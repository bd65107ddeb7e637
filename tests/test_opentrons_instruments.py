"""The Opentrons driver reads the robot's attached pipettes and fits the deck's to them.

Against a small robot-server of this test's own (stdlib http.server on 127.0.0.1) that
answers ``/instruments``, ``/pipettes`` and ``/modules`` with the shapes Opentrons'
robot-server sends (robot-server/robot_server/instruments/router.py and
instrument_models.py, robot_server/service/legacy/routers/pipettes.py and models/pipettes.py,
robot_server/modules/module_models.py; see notes/devices-opentrons-driver.md), and the rest
of a job's sequence (protocols, analyses, runs) as the recordings of robot-server 8.1 do.
"""

from __future__ import annotations

import argparse
import json
import logging
import re
import threading
from collections.abc import Iterator
from datetime import datetime, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from labctl.clock import VirtualClock
from labctl.devices import OpState
from labctl.drivers.opentrons_http import NotFound, OpentronsClient
from labctl.drivers.opentrons_instruments import (
    PipettesNotFitted,
    read_instruments,
    read_modules,
    robot_pipette_name,
)
from labctl.drivers.opentrons_lh import OpentronsLiquidHandler
from labctl.drivers.opentrons_protocol import DeckLayout
from labctl.drivers.registry import devices_check_cli
from labctl.errors import DeviceNeedsOperator

RESPONSES = Path(__file__).parent / "fixtures" / "opentrons-http" / "responses"
KEY = "r7:d3-feed-0900/P2/2"
FEED: dict[str, Any] = {
    "labware": "corning_6_wellplate_16.8ml_flat",
    "wells": ["A1", "B1"],
    "kind": "feed",
    "remove_ul": 2000.0,
    "add_ul": 2000.0,
    "recipe": "KSR",
    "deck_slot": 1,
}


# ---------------------------------------------------------------------- the robot's shapes


def ot2_pipette(mount: str, name: str, model: str, serial: str, lo: float, hi: float) -> dict:
    """An OT-2 pipette in ``GET /instruments`` (the router's OT-2 branch: no firmware,
    calibration or state; fields that are None are left out of the reply)."""
    return {
        "mount": mount,
        "instrumentType": "pipette",
        "instrumentName": name,
        "instrumentModel": model,
        "serialNumber": serial,
        "subsystem": f"pipette_{mount}",
        "ok": True,
        "data": {"channels": 1, "min_volume": lo, "max_volume": hi},
    }


def flex_pipette(mount: str, name: str, model: str, serial: str, lo: float, hi: float) -> dict:
    """A Flex pipette in ``GET /instruments`` (firmware, calibrated offset, tip sensor)."""
    return {
        "mount": mount,
        "instrumentType": "pipette",
        "instrumentName": name,
        "instrumentModel": model,
        "serialNumber": serial,
        "subsystem": f"pipette_{mount}",
        "ok": True,
        "firmwareVersion": "36",
        "data": {
            "channels": 1,
            "min_volume": lo,
            "max_volume": hi,
            "calibratedOffset": {
                "offset": {"x": 0.1, "y": -0.2, "z": 0.05},
                "source": "user",
                "last_modified": "2026-11-20T09:12:00+00:00",
                "reasonability_check_failures": [],
            },
        },
        "state": {"tipDetected": False},
    }


GRIPPER = {
    "mount": "extension",
    "instrumentType": "gripper",
    "instrumentModel": "gripperV1.3",
    "serialNumber": "GRPV1320230101A01",
    "subsystem": "gripper",
    "ok": True,
    "firmwareVersion": "12",
    "data": {"jawState": "homed"},
}


def bad_pipette(mount: str) -> dict:
    """A Flex pipette that needs a firmware update (``BadPipette``: no mount, name, model)."""
    sub = f"pipette_{mount}"
    return {
        "instrumentType": "pipette",
        "subsystem": sub,
        "status": f"/subsystems/status/{sub}",
        "update": f"/subsystems/updates/{sub}",
        "ok": False,
    }


def listing(*items: dict) -> dict:
    return {"data": list(items), "meta": {"cursor": 0, "totalLength": len(items)}}


P1000 = ("p1000_single_gen2", "p1000_single_v2.2", "P1KSV2220230101A02", 100.0, 1000.0)
P20 = ("p20_single_gen2", "p20_single_v2.2", "P20SV2220230101A01", 1.0, 20.0)
# The pipettes of the robot-server 8.1 OT-2 simulation the recordings come from.
P300_GEN2 = ("p300_single_gen2", "p300_single_v2.1", "P3HSV2120230101A03", 20.0, 300.0)
P300_GEN1 = ("p300_single", "p300_single_v1", "321", 30.0, 300.0)
P10_GEN1 = ("p10_single", "p10_single_v1", "123", 1.0, 10.0)
FLEX_1000 = ("p1000_single_flex", "p1000_single_v3.7", "P1KSV3720230101A02", 5.0, 1000.0)
FLEX_50 = ("p50_single_flex", "p50_single_v3.6", "P50SV3620230101A01", 5.0, 50.0)


def legacy_pipettes(left: tuple | None, right: tuple | None) -> dict:
    """``GET /pipettes`` of an OT-2: both mounts, ``model``/``name`` null when empty."""

    def entry(p: tuple | None, mount_axis: str, plunger_axis: str) -> dict:
        return {
            "model": p[1] if p else None,
            "name": p[0] if p else None,
            "tip_length": 51.7 if p else None,
            "mount_axis": mount_axis,
            "plunger_axis": plunger_axis,
            "id": p[2] if p else None,
        }

    return {"left": entry(left, "z", "b"), "right": entry(right, "a", "c")}


def recorded(name: str) -> Any:
    return json.loads((RESPONSES / f"{name}.json").read_text())["body"]


# ---------------------------------------------------------------------- a small robot-server


class FakeRobot:
    """Enough of a robot-server for a job: health, instruments (a reply or None for 404),
    pipettes, modules, protocols and their analyses (always ok), runs (idle until played,
    then ``run_status``) and their empty command pages. Records every request and the main
    file of each protocol uploaded. HTTP/1.0: one connection per request."""

    def __init__(self, robot: str = "OT-2", port: int = 0) -> None:
        self.health = recorded("ot2_ok_01_health" if robot == "OT-2" else "flex_ok_01_health")
        self.robot_type = "OT-2 Standard" if robot == "OT-2" else "OT-3 Standard"
        self.instruments: dict | None = None
        self.pipettes: dict | None = None
        self.modules: dict | None = listing()
        self.run_status = "running"
        self.run_errors: list[dict] = []
        self.requests: list[tuple[str, str]] = []
        self.sources: list[str] = []
        self.protocols: list[dict] = []
        self.runs: dict[str, dict] = {}
        self.lock = threading.Lock()
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def answer(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with fake.lock:
                    fake.requests.append((self.command, self.path))
                    status, reply = fake.route(self.command, self.path, body, self.headers)
                raw = json.dumps(reply).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(raw)))
                self.end_headers()
                self.wfile.write(raw)

            do_GET = do_POST = answer

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def count(self, method: str, path: str) -> int:
        return sum(1 for r in self.requests if r == (method, path))

    def route(self, method: str, target: str, body: bytes, headers: Any) -> tuple[int, Any]:
        path = target.split("?")[0]
        if (method, path) == ("GET", "/health"):
            return 200, self.health
        if (method, path) == ("GET", "/instruments"):
            return (200, self.instruments) if self.instruments is not None else not_found()
        if (method, path) == ("GET", "/pipettes"):
            return (200, self.pipettes) if self.pipettes is not None else not_found()
        if (method, path) == ("GET", "/modules"):
            return (200, self.modules) if self.modules is not None else not_found()
        if (method, path) == ("GET", "/protocols"):
            return 200, {"data": self.protocols, "meta": {"cursor": 0, "totalLength": 0}}
        if (method, path) == ("POST", "/protocols"):
            return 201, self.upload(body, headers["Content-Type"])
        if m := re.fullmatch(r"/protocols/(p\d+)/analyses/(a\d+)", path):
            analysis = {"id": m[2], "status": "completed", "result": "ok", "errors": []}
            return 200, {"data": {**analysis, "robotType": self.robot_type, "commands": []}}
        if m := re.fullmatch(r"/protocols/(p\d+)", path):
            runs = [{"id": r, "href": f"/runs/{r}"} for r, v in self.runs.items() if v["p"] == m[1]]
            return 200, {"data": {"id": m[1]}, "links": {"referencingRuns": runs}}
        if (method, path) == ("POST", "/runs"):
            rid = f"r{len(self.runs) + 1}"
            self.runs[rid] = {"p": json.loads(body)["data"]["protocolId"], "played": False}
            return 201, {"data": self.run(rid)}
        if m := re.fullmatch(r"/runs/(r\d+)/actions", path):
            self.runs[m[1]]["played"] = True
            return 201, {"data": {"id": "act", "actionType": "play"}}
        if m := re.fullmatch(r"/runs/(r\d+)", path):
            return 200, {"data": self.run(m[1])}
        if re.fullmatch(r"/runs/(r\d+)/(commands|commandErrors)", path):
            return 200, {"data": [], "meta": {"cursor": 0, "totalLength": 0}, "links": {}}
        return not_found()

    def upload(self, body: bytes, content_type: str) -> dict:
        boundary = content_type.split("boundary=")[1].encode()
        part = body.split(b"--" + boundary)[1]
        head, content = part.split(b"\r\n\r\n", 1)
        name = re.search(rb'filename="([^"]+)"', head)[1].decode()  # type: ignore[index]
        self.sources.append(content.removesuffix(b"\r\n").decode())
        pid = f"p{len(self.protocols) + 1}"
        self.protocols.append({"id": pid, "files": [{"name": name, "role": "main"}]})
        summary = {"id": f"a{len(self.protocols)}", "status": "completed"}
        return {"data": {"id": pid, "analysisSummaries": [summary], "robotType": self.robot_type}}

    def run(self, rid: str) -> dict:
        played = self.runs[rid]["played"]
        return {
            "id": rid,
            "ok": True,
            "createdAt": f"2026-12-01T08:00:{len(self.runs):02d}+00:00",
            "status": self.run_status if played else "idle",
            "current": True,
            "actions": [{"actionType": "play"}] if played else [],
            "errors": self.run_errors if played else [],
        }


def not_found() -> tuple[int, dict]:
    """robot-server's answer to a route it does not serve (framework 404)."""
    error = {"id": "BadRequest", "title": "Bad Request", "detail": "Not Found", "errorCode": "4000"}
    return 404, {"errors": [error]}


def pipette_load_failure() -> list[dict]:
    """A run's errors when the protocol loads a pipette the robot does not carry (the chain
    of a failed Python protocol, as recorded, around FailedToLoadPipetteError 3010)."""
    inner = {
        "id": "e2",
        "errorType": "FailedToLoadPipetteError",
        "errorCode": "3010",
        "detail": "mount Mount.RIGHT: instrument p1000_single_gen2 was requested, "
        "but p300_single_v1 is present",
        "wrappedErrors": [],
    }
    return [
        {
            "id": "e1",
            "errorType": "ExceptionInProtocolError",
            "errorCode": "4000",
            "detail": "FailedToLoadPipetteError [line 60]: mount Mount.RIGHT: ...",
            "wrappedErrors": [inner],
        }
    ]


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock(datetime(2026, 12, 1, 8, 0, tzinfo=timezone.utc))


@pytest.fixture
def ot2() -> Iterator[FakeRobot]:
    fake = FakeRobot("OT-2")
    yield fake
    fake.close()


def handler(fake: FakeRobot, clock: VirtualClock, robot: str = "OT-2", **kw: Any):
    client = OpentronsClient("ot2-a", fake.url, clock, timeout_s=2.0)
    layout = DeckLayout.default(robot)  # type: ignore[arg-type]
    kw.setdefault("check", False)
    return OpentronsLiquidHandler("ot2-a", client, layout, robot, **kw)  # type: ignore[arg-type]


def loads(source: str) -> list[tuple[str, str]]:
    """(pipette, mount) of each load_instrument in a generated protocol."""
    return re.findall(r"ctx\.load_instrument\('([^']+)', '([^']+)'", source)


# ---------------------------------------------------------------------- reading


def test_reads_every_shape_the_robot_sends(ot2: FakeRobot, clock: VirtualClock) -> None:
    client = OpentronsClient("ot2-a", ot2.url, clock)
    ot2.instruments = listing(ot2_pipette("left", *P20), ot2_pipette("right", *P1000))
    found = read_instruments(client)
    assert found.source == "GET /instruments"
    assert found.describe() == (
        "left p20_single_gen2 (p20_single_v2.2), right p1000_single_gen2 (p1000_single_v2.2)"
    )
    assert found.pipettes["right"].serial == "P1KSV2220230101A02"
    # A Flex: gripper, a pipette needing a firmware update (no mount: its subsystem says it).
    ot2.instruments = listing(bad_pipette("left"), flex_pipette("right", *FLEX_1000), GRIPPER)
    found = read_instruments(client)
    assert not found.pipettes["left"].ok and found.gripper == "gripperV1.3"
    assert found.describe() == (
        "left a pipette that needs a firmware update, right p1000_single_flex "
        "(p1000_single_v3.7), gripper gripperV1.3"
    )
    # Robot software without /instruments: the legacy /pipettes (null on an empty mount).
    ot2.instruments = None
    ot2.pipettes = legacy_pipettes(P10_GEN1, None)
    found = read_instruments(client)
    assert found.source == "GET /pipettes"
    assert found.describe() == "left p10_single (p10_single_v1), right nothing"
    ot2.pipettes = None
    assert not read_instruments(client).known
    # Modules: the current list, and the legacy one (Opentrons-Version 2).
    module = {
        "id": "m1",
        "serialNumber": "HSV10220230101",
        "firmwareVersion": "1.0.3",
        "hardwareRevision": "HSV1",
        "hasAvailableUpdate": False,
        "moduleType": "heaterShakerModuleType",
        "moduleModel": "heaterShakerModuleV1",
        "moduleOffset": {"offset": {"x": 0, "y": 0, "z": 0}, "slot": "D1", "source": "user"},
        "compatibleWithRobot": True,
        "data": {"status": "idle"},
        "usbPort": {"port": 1, "portGroup": "main", "hub": False, "hubPort": None, "path": "/x"},
    }
    ot2.modules = listing(module)
    assert [m.describe() for m in read_modules(client) or []] == [
        "heaterShakerModuleV1 (calibrated in slot D1)"
    ]
    ot2.modules = {"modules": [{"name": "tempdeck", "moduleModel": "temperatureModuleV2",
                                "serial": "TDV21", "model": "temp_deck_v21"}]}  # fmt: skip
    assert [(m.model, m.serial) for m in read_modules(client) or []] == [
        ("temperatureModuleV2", "TDV21")
    ]
    ot2.modules = None
    assert read_modules(client) is None


def test_flex_load_names_map_to_the_robots_pipette_names() -> None:
    from opentrons_shared_data.pipette.types import PIPETTE_API_NAMES_MAP

    for load_name in ("flex_1channel_1000", "flex_1channel_50", "p20_single_gen2"):
        assert robot_pipette_name(load_name) == PIPETTE_API_NAMES_MAP[load_name].value


# ---------------------------------------------------------------------- fitting a job


def test_each_pipette_is_loaded_on_the_mount_where_it_is_attached(
    ot2: FakeRobot, clock: VirtualClock
) -> None:
    """Swapped mounts: the protocol loads the 1000 µL pipette on the left, and the opentrons
    simulator's tip count per mount is read against those mounts."""
    ot2.instruments = listing(ot2_pipette("left", *P1000), ot2_pipette("right", *P20))
    lh = handler(ot2, clock, check=True)
    lh.start_job(KEY, dict(FEED))
    assert loads(ot2.sources[0]) == [("p1000_single_gen2", "left")]
    assert lh.tips_left["tips"] == 2 * 96 - 3  # 2 wells out, one tip in: the main racks
    assert lh.tips_left["small_tips"] == 96


def test_a_flex_pipette_is_found_by_its_robot_name(clock: VirtualClock) -> None:
    fake = FakeRobot("Flex")
    try:
        fake.instruments = listing(
            flex_pipette("left", *FLEX_1000), flex_pipette("right", *FLEX_50), GRIPPER
        )
        lh = handler(fake, clock, "Flex")
        # 10 µL of stock by the small pipette, mixed in by the main one.
        addition = {**FEED, "kind": "addition", "stock_ul": 10.0, "well_before_ul": 2000.0}
        lh.start_job(KEY, addition)
        assert sorted(loads(fake.sources[0])) == [
            ("flex_1channel_1000", "left"),
            ("flex_1channel_50", "right"),
        ]
    finally:
        fake.close()


def test_missing_pipettes_refuse_the_job_before_anything_is_sent(
    ot2: FakeRobot, clock: VirtualClock
) -> None:
    """The robot-server 8.1 OT-2 simulation's pipettes (p300 and p10, GEN1) on a default
    deck (p1000 and p20): the run would fail at its first load (3010); it is refused."""
    ot2.instruments = listing(ot2_pipette("left", *P10_GEN1), ot2_pipette("right", *P300_GEN1))
    lh = handler(ot2, clock, tip_capacity={"tips": 100})
    with pytest.raises(PipettesNotFitted) as info:
        lh.start_job(KEY, dict(FEED))
    assert isinstance(info.value, DeviceNeedsOperator)  # a person, not a retry by itself
    assert str(info.value) == (
        "ot2-a: start r7:d3-feed-0900/P2/2: the pipettes the deck names are not attached: it "
        "needs p1000_single_gen2 (main, 100-1000 µL) and p20_single_gen2 (small, 1-20 µL), on "
        "either mount; attached: left p10_single (p10_single_v1), right p300_single "
        "(p300_single_v1). Nothing was started: fit them, or name the fitted pipettes and "
        "their racks in the workcell's deck (pipette, small_pipette), then retry"
    )
    assert not [r for r in ot2.requests if r[0] == "POST"]
    assert ot2.count("GET", "/instruments") == 1  # read just now: not asked twice
    # Ahead of time: the kept reading is checked once more; nothing uploaded, nothing raised.
    lh.prepare("r7:d4-feed/P2/3", dict(FEED))
    assert not ot2.sources and ot2.count("GET", "/instruments") == 2
    # The operator fits the pipettes and says so: they are read again, the tips stay.
    ot2.instruments = listing(ot2_pipette("left", *P20), ot2_pipette("right", *P1000))
    lh.attended(KEY, str(info.value))
    assert lh.tips_left["tips"] == 100
    lh.start_job(KEY, dict(FEED))
    assert loads(ot2.sources[0]) == [("p1000_single_gen2", "right")]


def test_a_kept_reading_that_would_refuse_a_job_is_checked_once_more(
    ot2: FakeRobot, clock: VirtualClock
) -> None:
    """The pipettes were fitted since the last reading, and nobody told the driver."""
    ot2.instruments = listing(ot2_pipette("left", *P10_GEN1), ot2_pipette("right", *P300_GEN1))
    lh = handler(ot2, clock)
    with pytest.raises(PipettesNotFitted):
        lh.start_job(KEY, dict(FEED))
    ot2.instruments = listing(ot2_pipette("left", *P1000), ot2_pipette("right", *P20))
    lh.start_job(KEY, dict(FEED))
    assert ot2.count("GET", "/instruments") == 2
    assert loads(ot2.sources[0]) == [("p1000_single_gen2", "left")]


def test_one_pipette_of_the_deck_is_enough_when_it_names_no_small_one(
    ot2: FakeRobot, clock: VirtualClock
) -> None:
    ot2.instruments = listing(ot2_pipette("left", *P300_GEN2))
    client = OpentronsClient("ot2-a", ot2.url, clock)
    layout = DeckLayout.from_deck(
        {"pipette": "p300_single_gen2", "tip_rack": "opentrons_96_filtertiprack_200ul",
         "small_pipette": None},
        "OT-2",
    )  # fmt: skip
    lh = OpentronsLiquidHandler("ot2-a", client, layout, "OT-2", check=False)
    lh.start_job(KEY, {**FEED, "remove_ul": 200.0, "add_ul": 200.0})
    assert loads(ot2.sources[0]) == [("p300_single_gen2", "left")]


# ---------------------------------------------------------------------- when to read again


def test_the_reading_is_kept_and_read_again_after_a_reconnect(clock: VirtualClock) -> None:
    first = FakeRobot("OT-2")
    first.instruments = listing(ot2_pipette("left", *P20), ot2_pipette("right", *P1000))
    lh = handler(first, clock)
    lh.start_job(KEY, dict(FEED))
    lh.start_job("r7:d3-feed-0900/P3/2", dict(FEED))
    assert first.count("GET", "/instruments") == 1  # kept between jobs
    assert [loads(s) for s in first.sources] == [[("p1000_single_gen2", "right")]] * 2
    # The robot goes away (restarted) and comes back with the pipettes swapped.
    first.close()
    assert [a.code for a in lh.alarms()] == ["offline"]
    second = FakeRobot("OT-2", port=first.port)
    try:
        second.instruments = listing(ot2_pipette("left", *P1000), ot2_pipette("right", *P20))
        lh.start_job("r7:d3-feed-0900/P4/2", dict(FEED))
        assert second.count("GET", "/instruments") == 1
        assert loads(second.sources[0]) == [("p1000_single_gen2", "left")]
    finally:
        second.close()


def test_a_run_that_fails_for_a_pipette_makes_the_driver_read_them_again(
    ot2: FakeRobot, clock: VirtualClock
) -> None:
    ot2.instruments = listing(ot2_pipette("left", *P20), ot2_pipette("right", *P1000))
    lh = handler(ot2, clock)
    op_id = lh.start_job(KEY, dict(FEED))
    # Someone swapped the pipettes through the Opentrons App: the run fails at its load.
    ot2.instruments = listing(ot2_pipette("left", *P1000), ot2_pipette("right", *P20))
    ot2.run_status, ot2.run_errors = "failed", pipette_load_failure()
    st = lh.poll(op_id)
    assert st.state is OpState.FAILED and st.error is not None
    assert st.error.device_code == "3010"
    lh.start_job("r7:d3-feed-0900/P3/2", dict(FEED))
    assert ot2.count("GET", "/instruments") == 2
    assert loads(ot2.sources[-1]) == [("p1000_single_gen2", "left")]


def test_a_robot_that_serves_no_instruments_route_gets_the_decks_mounts(
    ot2: FakeRobot, clock: VirtualClock, caplog: pytest.LogCaptureFixture
) -> None:
    """Neither /instruments nor /pipettes (not a robot of the supported software): the deck's
    mounts, with a warning; the robot's own run would refuse a wrong pipette at its load."""
    lh = handler(ot2, clock)
    with caplog.at_level(logging.WARNING, logger="labctl.drivers.opentrons_instruments"):
        lh.start_job(KEY, dict(FEED))
    assert loads(ot2.sources[0]) == [("p1000_single_gen2", "right")]
    assert "serves neither /instruments nor /pipettes" in caplog.text
    assert ot2.count("GET", "/pipettes") == 1


def test_a_404_of_a_route_is_not_found(ot2: FakeRobot, clock: VirtualClock) -> None:
    client = OpentronsClient("ot2-a", ot2.url, clock)
    with pytest.raises(NotFound, match="BadRequest: Not Found"):
        client.get("/instruments")


# ---------------------------------------------------------------------- devices check


def test_devices_check_shows_pipettes_and_modules_and_flags_a_mismatch(
    clock: VirtualClock,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    good, wrong, flex = FakeRobot("OT-2"), FakeRobot("OT-2"), FakeRobot("Flex")
    try:
        good.instruments = listing(ot2_pipette("left", *P20), ot2_pipette("right", *P1000))
        wrong.instruments = listing(
            ot2_pipette("left", *P10_GEN1), ot2_pipette("right", *P300_GEN1)
        )
        flex.instruments = listing(
            flex_pipette("left", *FLEX_50), flex_pipette("right", *FLEX_1000), GRIPPER
        )
        # A module calibrated in D1, where the Flex deck puts the culture plate.
        hs = {"moduleModel": "heaterShakerModuleV1", "serialNumber": "HS1",
              "moduleOffset": {"offset": {"x": 0, "y": 0, "z": 0}, "slot": "D1"}}  # fmt: skip
        flex.modules = listing(hs)
        wc = tmp_path / "wc.yaml"
        wc.write_text(
            "name: bay\ndevices:\n"
            f"  ot2-a: {{driver: opentrons, url: '{good.url}', robot: OT-2, deck: {{plate: 1}}}}\n"
            f"  ot2-b: {{driver: opentrons, url: '{wrong.url}', robot: OT-2, deck: {{plate: 1}}}}\n"
            f"  flex-c: {{driver: opentrons, url: '{flex.url}', robot: Flex, deck: {{plate: D1}}}}\n"
        )
        monkeypatch.setenv("LABCTL_DB", str(tmp_path / "none.sqlite"))
        assert devices_check_cli(argparse.Namespace(workcell=str(wc), db=None)) == 1
    finally:
        for fake in (good, wrong, flex):
            fake.close()
    out = capsys.readouterr().out.splitlines()
    a, b, c = out[1], out[2], out[3]
    assert a.split()[:4] == ["ot2-a", "opentrons", "ok", "OT-2"]
    assert a.endswith(
        "pipettes: left p20_single_gen2 (p20_single_v2.2), right p1000_single_gen2 "
        "(p1000_single_v2.2); modules: none"
    )
    assert b.split()[:3] == ["ot2-b", "opentrons", "FAIL"] and "does not fit the deck" in b
    assert b.endswith(
        "pipettes: left p10_single (p10_single_v1), right p300_single (p300_single_v1); "
        "NOT the deck's: it needs p1000_single_gen2 (main, 100-1000 µL) and p20_single_gen2 "
        "(small, 1-20 µL); modules: none"
    )
    assert c.split()[:3] == ["flex-c", "opentrons", "FAIL"]
    assert c.endswith(
        "gripper gripperV1.3; modules: heaterShakerModuleV1 (calibrated in slot D1); "
        "NOT the deck's: heaterShakerModuleV1 sits in slot D1, the plate's"
    )
    assert out[-1] == "1 of 3 devices ok; failing: ot2-b, flex-c"


# ---------------------------------------------------------------------- against the simulator


def test_against_the_project_simulator_written_from_the_same_robot_server(
    clock: VirtualClock,
) -> None:
    """simulators/opentrons_robot.py, written independently from robot-server's source: with
    the stock OT-2 pipettes a run would fail at its pipette load (3010), so the driver refuses
    the job first; with the deck's pipettes on swapped mounts the feed succeeds."""
    from labctl.simulators.opentrons_robot import RobotSimulator

    stock = {"left": "p10_single", "right": "p300_single"}
    with RobotSimulator(clock, "OT-2", instruments=stock) as sim:
        client = OpentronsClient("ot2-a", sim.url, clock)
        lh = OpentronsLiquidHandler(
            "ot2-a", client, DeckLayout.default("OT-2"), "OT-2", check=False
        )
        with pytest.raises(PipettesNotFitted, match="attached: left p10_single"):
            lh.start_job(KEY, dict(FEED))
        assert client.current_run_id() is None
    swapped = {"left": "p1000_single_gen2", "right": "p20_single_gen2"}
    with RobotSimulator(clock, "OT-2", instruments=swapped) as sim:
        client = OpentronsClient("ot2-a", sim.url, clock)
        lh = OpentronsLiquidHandler(
            "ot2-a", client, DeckLayout.default("OT-2"), "OT-2", check=False
        )
        op_id = lh.start_job(KEY, dict(FEED))
        for _ in range(1000):
            st = lh.poll(op_id)
            if st.state is not OpState.RUNNING:
                break
            clock.sleep(5)
        assert st.state is OpState.SUCCEEDED, st.detail
