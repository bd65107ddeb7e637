"""The simulated Opentrons robot-server against the recordings of the real one.

Recordings: shared/reference/opentrons-http/ (robot-server 8.1 in simulation, OT-2 and Flex).
A plain http.client client plays the controller's driver sequence (DEVICES.md 1.5); bodies are
compared with the recorded ones after replacing ids and timestamps by placeholders. Time is a
VirtualClock: the tests move it and the simulated run follows.
"""

from __future__ import annotations

import http.client
import json
import re
import threading
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from labctl.clock import VirtualClock
from labctl.simulators.opentrons_analysis import analyse_protocol, default_analysis, warm_up
from labctl.simulators.opentrons_analysis_data import source_key
from labctl.simulators.opentrons_instruments import STOCK_OT2_INSTRUMENTS
from labctl.simulators.opentrons_robot import Faults, RobotSimulator
from labctl.simulators.opentrons_wire import MAX_PROTOCOL_API

REF = Path(__file__).parent / "fixtures" / "opentrons-http"
PROTOCOLS = REF / "protocols"
RESPONSES = REF / "responses"

pytestmark = pytest.mark.skipif(not REF.is_dir(), reason="shared Opentrons recordings missing")

_UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_TIME = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}\+00:00$")
TERMINAL = ("succeeded", "failed", "stopped")


def norm(obj: Any) -> Any:
    """Replace ids and timestamps (which differ run to run) by placeholders."""
    if isinstance(obj, dict):
        return {k: norm(v) for k, v in obj.items()}
    if isinstance(obj, list):
        return [norm(v) for v in obj]
    if isinstance(obj, str) and _TIME.match(obj):
        return "<time>"
    if isinstance(obj, str):
        return _UUID.sub("<id>", obj)  # also inside hrefs and details
    return obj


def recorded(name: str) -> dict[str, Any]:
    return json.loads((RESPONSES / name).read_text())


class Reply:
    def __init__(self, status: int, headers: dict[str, str], raw: bytes) -> None:
        self.status = status
        self.headers = headers
        self.raw = raw
        self.body = json.loads(raw) if raw else None

    @property
    def data(self) -> Any:
        return self.body["data"]


class Client:
    """A bare HTTP client (no labctl driver): one connection per request."""

    def __init__(self, sim: RobotSimulator, version: str | None = "3") -> None:
        self.sim = sim
        self.version = version

    def request(
        self,
        method: str,
        path: str,
        body: Any = None,
        *,
        raw: bytes | None = None,
        content_type: str | None = None,
        version: str | None = "default",
    ) -> Reply:
        headers = {}
        used = self.version if version == "default" else version
        if used is not None:
            headers["Opentrons-Version"] = used
        payload = raw
        if body is not None:
            payload = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        if content_type is not None:
            headers["Content-Type"] = content_type
        conn = http.client.HTTPConnection("127.0.0.1", self.sim.port, timeout=30)
        try:
            conn.request(method, path, body=payload, headers=headers)
            resp = conn.getresponse()
            return Reply(resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read())
        finally:
            conn.close()

    def get(self, path: str, **kw: Any) -> Reply:
        return self.request("GET", path, **kw)

    def post(self, path: str, body: Any = None, **kw: Any) -> Reply:
        return self.request("POST", path, body, **kw)

    def upload(self, *files: tuple[str, bytes], extra: dict[str, str] | None = None) -> Reply:
        boundary = "b" + uuid.uuid4().hex
        chunks = []
        for name, data in files:
            chunks.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="files"; '
                f'filename="{name}"\r\nContent-Type: text/x-python\r\n\r\n'.encode()
                + data
                + b"\r\n"
            )
        for key, value in (extra or {}).items():
            chunks.append(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n'
                f"{value}\r\n".encode()
            )
        chunks.append(f"--{boundary}--\r\n".encode())
        return self.post(
            "/protocols",
            raw=b"".join(chunks),
            content_type=f"multipart/form-data; boundary={boundary}",
        )

    def upload_file(self, name: str) -> Reply:
        return self.upload((name, (PROTOCOLS / name).read_bytes()))

    def action(self, run_id: str, action_type: str) -> Reply:
        return self.post(f"/runs/{run_id}/actions", {"data": {"actionType": action_type}})


@pytest.fixture(scope="session", autouse=True)
def _opentrons_imported() -> None:
    warm_up()  # the ~2.6 s opentrons import, once per session


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def make_sim(clock: VirtualClock) -> Iterator[Callable[..., tuple[RobotSimulator, Client]]]:
    started: list[RobotSimulator] = []

    def make(robot: str = "OT-2", **kwargs: Any) -> tuple[RobotSimulator, Client]:
        if robot == "OT-2":
            # The recordings' robot: robot-server's stock simulated OT-2 (p300 GEN1 right).
            kwargs.setdefault("instruments", STOCK_OT2_INSTRUMENTS)
        sim = RobotSimulator(clock, robot, **kwargs).start()  # type: ignore[arg-type]
        started.append(sim)
        return sim, Client(sim)

    yield make
    for sim in started:
        sim.stop()


def ready_protocol(client: Client, clock: VirtualClock, name: str) -> str:
    """Upload, wait out the analysis, return the protocol id."""
    reply = client.upload_file(name)
    assert reply.status == 201, reply.body
    clock.advance(client.sim.analysis_delay_s)
    return reply.data["id"]


def new_run(client: Client, protocol_id: str) -> str:
    reply = client.post("/runs", {"data": {"protocolId": protocol_id}})
    assert reply.status == 201, reply.body
    return reply.data["id"]


def run_to_end(client: Client, clock: VirtualClock, run_id: str, step: float = 0.5) -> list[str]:
    """Advance the clock in steps until the run ends; returns the statuses seen."""
    seen: list[str] = []
    for _ in range(10_000):
        status = client.get(f"/runs/{run_id}").data["status"]
        if not seen or seen[-1] != status:
            seen.append(status)
        if status in TERMINAL:
            return seen
        clock.advance(step)
    raise AssertionError(f"run never ended: {seen}")


# --------------------------------------------------------------------------------------------
# Health, headers, versioning
# --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("robot", "prefix"), [("OT-2", "ot2_ok"), ("Flex", "flex_ok")])
def test_health_matches_recording(make_sim: Any, robot: str, prefix: str) -> None:
    sim, client = make_sim(robot)
    reply = client.get("/health")
    rec = recorded(f"{prefix}_01_health.json")
    assert reply.status == rec["status_code"] == 200
    expected = dict(rec["body"])
    # The recording is robot-server 8.1; this simulator analyses with opentrons 8.8.2.
    expected["api_version"] = "8.8.2"
    expected["maximum_protocol_api_version"] = list(MAX_PROTOCOL_API)
    assert reply.body == expected
    assert reply.headers["opentrons-version"] == "3"
    assert reply.headers["opentrons-min-version"] == "2"
    assert reply.headers["content-type"] == "application/json"
    assert reply.headers["server"] == "uvicorn"
    assert reply.headers["date"] == "Thu, 01 Jan 2026 00:00:00 GMT"  # the virtual clock's
    assert list(reply.headers)[:2] == ["date", "server"]


def test_max_protocol_api_is_the_installed_opentrons() -> None:
    from opentrons.protocols.api_support.definitions import MAX_SUPPORTED_VERSION

    assert tuple(MAX_PROTOCOL_API) == (MAX_SUPPORTED_VERSION.major, MAX_SUPPORTED_VERSION.minor)


def test_version_header_is_required_everywhere(make_sim: Any) -> None:
    sim, client = make_sim()
    health = client.get("/health", version=None)
    rec = recorded("probe_health_no_version_header.json")
    assert (health.status, health.body) == (422, rec["body"])
    assert health.headers["opentrons-version"] == "4"
    assert health.headers["opentrons-min-version"] == "2"
    runs = client.get("/runs", version=None)
    rec = recorded("probe_runs_no_version_header.json")
    assert (runs.status, runs.body) == (422, rec["body"])
    assert int(runs.headers["content-length"]) == int(rec["headers"]["content-length"])
    for path in ("/protocols", "/runs/x/commands", "/protocols/x/analyses/y"):
        assert client.get(path, version=None).status == 422
    star = client.get("/runs", version="*")
    assert star.status == 200
    assert star.body == {"data": [], "links": {}, "meta": {"cursor": 0, "totalLength": 0}}
    assert "opentrons-version" not in star.headers  # success bodies carry none (recordings)
    assert client.get("/health", version="*").headers["opentrons-version"] == "4"
    outdated = client.get("/runs", version="1")
    assert outdated.status == 400
    assert outdated.body["errors"][0]["id"] == "OutdatedAPIVersion"
    bad = client.get("/runs", version="three")
    assert bad.status == 422
    assert bad.body["errors"][0]["source"] == {"header": "opentrons-version"}


def test_unknown_path_and_keep_alive(make_sim: Any) -> None:
    sim, client = make_sim()
    missing = client.get("/nowhere")
    assert missing.status == 404
    assert missing.body["errors"][0]["id"] == "BadRequest"
    assert client.request("PUT", "/runs").status == 405
    conn = http.client.HTTPConnection("127.0.0.1", sim.port, timeout=10)
    try:
        for _ in range(2):  # HTTP/1.1: two requests on one connection
            conn.request("GET", "/health", headers={"Opentrons-Version": "3"})
            resp = conn.getresponse()
            assert resp.status == 200
            assert json.loads(resp.read())["robot_model"] == "OT-2 Standard"
    finally:
        conn.close()


# --------------------------------------------------------------------------------------------
# The driver sequence, step by step against the recordings
# --------------------------------------------------------------------------------------------


def _strip_params(commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
    # 8.8.2 adds a few params (e.g. dropTip's scrape_tips) that 8.1 did not have.
    return [{k: v for k, v in c.items() if k != "params"} for c in commands]


@pytest.mark.parametrize(
    ("robot", "prefix", "protocol"),
    [
        ("OT-2", "ot2_ok", "ot2_ok.py"),
        ("OT-2", "ot2_notip", "ot2_no_tip.py"),
        ("Flex", "flex_ok", "flex_ok.py"),
        ("Flex", "flex_notip", "flex_no_tip.py"),
    ],
)
def test_driver_sequence_matches_recordings(
    make_sim: Any, clock: VirtualClock, robot: str, prefix: str, protocol: str
) -> None:
    sim, client = make_sim(robot, analysis_delay_s=2.0, time_scale=0.01)

    def rec(step: str) -> dict[str, Any]:
        return recorded(f"{prefix}_{step}.json")

    # 1. health
    assert (
        client.get("/health").body["robot_model"]
        == recorded(f"{prefix}_01_health.json")["body"]["robot_model"]
    )
    # 2. upload: 201, pending analysis
    upload = client.upload_file(protocol)
    assert upload.status == rec("02_post_protocols")["status_code"] == 201
    assert norm(upload.body) == norm(rec("02_post_protocols")["body"])
    protocol_id = upload.data["id"]
    analysis_id = upload.data["analysisSummaries"][-1]["id"]
    # 3. analysis: pending for analysis_delay_s of clock time, then completed
    pending = client.get(f"/protocols/{protocol_id}/analyses/{analysis_id}")
    assert pending.body == {
        "data": {"id": analysis_id, "status": "pending", "runTimeParameters": []}
    }
    clock.advance(1.9)
    assert (
        client.get(f"/protocols/{protocol_id}/analyses/{analysis_id}").data["status"] == "pending"
    )
    clock.advance(0.1)
    analysis = client.get(f"/protocols/{protocol_id}/analyses/{analysis_id}")
    rec_analysis = rec("03_get_analysis_completed")["body"]["data"]
    assert analysis.status == 200
    assert list(analysis.data) == list(rec_analysis)
    for key in ("status", "result", "robotType", "runTimeParameters", "modules", "liquids"):
        assert analysis.data[key] == rec_analysis[key], key
    assert [(c["commandType"], c["key"], c["status"]) for c in analysis.data["commands"]] == [
        (c["commandType"], c["key"], c["status"]) for c in rec_analysis["commands"]
    ]
    assert [list(c) for c in analysis.data["commands"]] == [
        list(c) for c in rec_analysis["commands"]
    ]
    assert norm(analysis.data["labware"]) == norm(rec_analysis["labware"])
    assert norm(analysis.data["pipettes"]) == norm(rec_analysis["pipettes"])
    assert norm(analysis.data["errors"]) == norm(rec_analysis["errors"])
    assert analysis.data["commands"][0]["createdAt"] > "2026-01-01T00:00:00"  # on our clock
    # 4. protocol and analyses list
    got = client.get(f"/protocols/{protocol_id}")
    assert norm(got.body) == norm(rec("04_get_protocol")["body"])
    analyses = client.get(f"/protocols/{protocol_id}/analyses")
    assert analyses.body["meta"] == rec("04b_get_analyses")["body"]["meta"]
    assert analyses.data[0] == analysis.data
    # 5. create the run (allowed even for a not-ok analysis: the driver must refuse itself)
    created = client.post("/runs", {"data": {"protocolId": protocol_id}})
    assert created.status == 201
    assert norm(created.body) == norm(rec("05_post_runs")["body"])
    assert created.headers["content-length"] == rec("05_post_runs")["headers"]["content-length"]
    run_id = created.data["id"]
    assert norm(client.get(f"/runs/{run_id}").body) == norm(rec("06_get_run_idle")["body"])
    # 6. play
    play = client.action(run_id, "play")
    assert play.status == 201
    assert norm(play.body) == norm(rec("07_post_play")["body"])
    assert play.headers["content-length"] == rec("07_post_play")["headers"]["content-length"]
    # 7. poll to the end
    statuses = run_to_end(client, clock, run_id, step=0.01)
    final = client.get(f"/runs/{run_id}")
    rec_final = rec("08_get_run_final")
    assert norm(final.body) == norm(rec_final["body"])
    assert final.headers["content-length"] == rec_final["headers"]["content-length"]
    assert statuses == ["running", "finishing", rec_final["body"]["data"]["status"]]
    # 8. commands, without and with a cursor
    rec_cmds = rec("09_get_run_commands")["body"]
    commands = client.get(f"/runs/{run_id}/commands")
    assert commands.body["meta"] == rec_cmds["meta"]
    assert norm(commands.body["links"]) == norm(rec_cmds["links"])
    assert norm(_strip_params(commands.data)) == norm(_strip_params(rec_cmds["data"]))
    rec_cmds0 = rec("09b_get_run_commands_cursor0")["body"]
    commands0 = client.get(f"/runs/{run_id}/commands?cursor=0&pageLength=20")
    assert commands0.body["meta"] == rec_cmds0["meta"]
    assert norm(_strip_params(commands0.data)) == norm(_strip_params(rec_cmds0["data"]))
    assert commands0.data[-1]["id"] == commands.body["links"]["current"]["meta"]["commandId"]
    # 9. command errors, one command
    errors = client.get(f"/runs/{run_id}/commandErrors")
    assert norm(errors.body) == norm(rec("10_get_run_command_errors")["body"])
    first = client.get(f"/runs/{run_id}/commands/{commands0.data[0]['id']}")
    assert norm(first.body) == norm(rec("11_get_single_command")["body"])
    # 10. release the robot
    patched = client.request("PATCH", f"/runs/{run_id}", {"data": {"current": False}})
    assert patched.status == 200
    assert norm(patched.body) == norm(rec("12_patch_run_not_current")["body"])


@pytest.mark.parametrize("robot", ["OT-2", "Flex"])
def test_failed_run_error_is_nested_like_the_robot(
    make_sim: Any, clock: VirtualClock, robot: str
) -> None:
    sim, client = make_sim(robot, time_scale=0.01)
    protocol = "ot2_no_tip.py" if robot == "OT-2" else "flex_no_tip.py"
    run_id = new_run(client, ready_protocol(client, clock, protocol))
    client.action(run_id, "play")
    run_to_end(client, clock, run_id)
    run = client.get(f"/runs/{run_id}").data
    outer = run["errors"][0]
    middle = outer["wrappedErrors"][0]
    inner = middle["wrappedErrors"][0]
    assert (outer["errorType"], middle["errorType"], inner["errorType"]) == (
        "ExceptionInProtocolError",
        "ProtocolCommandFailedError",
        "TipNotAttachedError",
    )
    line = 11 if robot == "OT-2" else 12
    assert outer["detail"].startswith(f"ProtocolCommandFailedError [line {line}]: ")
    assert outer["id"] == middle["id"] != inner["id"]
    assert (outer["errorCode"], inner["errorCode"], inner["isDefined"]) == ("4000", "3005", False)
    failed = client.get(f"/runs/{run_id}/commands?cursor=0&pageLength=50").data[-1]
    assert failed["status"] == "failed"
    assert failed["error"] == inner
    assert client.get(f"/runs/{run_id}/commandErrors").data == [inner]


# --------------------------------------------------------------------------------------------
# Upload: dedup, invalid files, robot type
# --------------------------------------------------------------------------------------------


def test_identical_reupload_answers_200_and_pending_reupload_503(
    make_sim: Any, clock: VirtualClock
) -> None:
    sim, client = make_sim(analysis_delay_s=5.0)
    first = client.upload_file("ot2_ok.py")
    assert first.status == 201
    again = client.upload_file("ot2_ok.py")
    assert again.status == 503
    assert again.body["errors"][0]["id"] == "LastAnalysisPending"
    clock.advance(5.0)
    again = client.upload_file("ot2_ok.py")
    assert again.status == 200
    assert again.data["id"] == first.data["id"]
    assert again.data["analysisSummaries"] == [
        {"id": first.data["analysisSummaries"][0]["id"], "status": "completed"}
    ]
    other = client.upload_file("ot2_delay.py")
    assert other.status == 201
    assert other.data["id"] != first.data["id"]
    listing = client.get("/protocols")
    assert [p["id"] for p in listing.data] == [first.data["id"], other.data["id"]]
    assert listing.body["meta"] == {"cursor": 0, "totalLength": 2}
    uploads = [e for e in sim.action_entries() if e["event"] == "protocol_upload"]
    assert [e["status"] for e in uploads] == [201, 200, 201]


def test_old_runs_and_unused_protocols_are_auto_deleted_like_robot_server(
    make_sim: Any, clock: VirtualClock
) -> None:
    # robot-server keeps maximum_runs runs (oldest deleted first) and maximum_unused_protocols
    # protocols that no run links to; a protocol a run links to is never deleted.
    sim, client = make_sim(maximum_runs=2, maximum_unused_protocols=2)
    data = (PROTOCOLS / "ot2_ok.py").read_bytes()

    def upload(n: int) -> str:
        # Distinct contents (a trailing comment), so each upload is a new protocol.
        reply = client.upload((f"p{n}.py", data + f"\n# {n}\n".encode()))
        assert reply.status == 201, reply.body
        return reply.data["id"]

    used = upload(1)
    clock.advance(1.0)
    run_a = new_run(client, used)
    unused = [upload(2), upload(3)]
    assert [p["id"] for p in client.get("/protocols").data] == [used, *unused]
    fourth = upload(4)  # three unused now: the oldest unused goes, not the older used one
    assert [p["id"] for p in client.get("/protocols").data] == [used, unused[1], fourth]
    assert client.get(f"/protocols/{unused[0]}").status == 404
    clock.advance(1.0)
    run_b = new_run(client, fourth)
    run_c = new_run(client, unused[1])  # the third run: the oldest run goes
    assert [r["id"] for r in client.get("/runs").data] == [run_b, run_c]
    assert client.get(f"/runs/{run_a}").status == 404
    # Its protocol is unused now, the oldest unused one: it goes when room is made again.
    fifth = upload(5)
    assert client.get(f"/protocols/{used}").status == 200
    sixth = upload(6)
    assert client.get(f"/protocols/{used}").status == 404
    assert [p["id"] for p in client.get("/protocols").data] == [unused[1], fourth, fifth, sixth]
    with pytest.raises(ValueError):
        RobotSimulator(clock, maximum_runs=0)


def test_upload_with_key_and_kind(make_sim: Any) -> None:
    sim, client = make_sim()
    data = (PROTOCOLS / "ot2_ok.py").read_bytes()
    reply = client.upload(("ot2_ok.py", data), extra={"key": "feed-day-3"})
    assert reply.status == 201
    assert reply.data["key"] == "feed-day-3"
    assert list(reply.data)[-2:] == ["key", "protocolKind"]
    bad = client.upload(("x.py", data), extra={"protocolKind": "weird"})
    assert bad.status == 400
    assert client.post("/protocols", raw=b"", content_type="text/plain").status == 422


def test_invalid_python_is_422_like_the_robot(make_sim: Any) -> None:
    sim, client = make_sim()
    reply = client.upload(("bad.py", b"x = (\n"))
    rec = recorded("probe_post_protocols_bad_python.json")
    assert (reply.status, reply.body) == (422, rec["body"])
    assert reply.headers["opentrons-version"] == "4"
    assert reply.headers["content-length"] == rec["headers"]["content-length"]


@pytest.mark.parametrize(
    ("robot", "protocol", "detail"),
    [
        (
            "OT-2",
            "flex_ok.py",
            "This protocol is for Flex robots. It can't be analyzed or run on this robot,"
            " which is an OT-2.",
        ),
        (
            "Flex",
            "ot2_ok.py",
            "This protocol is for OT-2 robots. It can't be analyzed or run on this robot,"
            " which is a Flex.",
        ),
    ],
)
def test_robot_type_mismatch_is_422(make_sim: Any, robot: str, protocol: str, detail: str) -> None:
    sim, client = make_sim(robot)
    reply = client.upload_file(protocol)
    assert reply.status == 422
    assert reply.body == {
        "errors": [
            {
                "id": "ProtocolRobotTypeMismatch",
                "title": "Protocol For Different Robot Type",
                "detail": detail,
                "errorCode": "4000",
            }
        ]
    }
    assert client.get("/protocols").data == []


def test_analysis_is_cached_per_content() -> None:
    files = [("ot2_ok.py", (PROTOCOLS / "ot2_ok.py").read_bytes())]
    assert analyse_protocol(files) is analyse_protocol(list(files))


# --------------------------------------------------------------------------------------------
# 404s and 409s
# --------------------------------------------------------------------------------------------


def test_not_found_bodies_match_recordings(make_sim: Any) -> None:
    sim, client = make_sim()
    for reply, name in (
        (client.get("/protocols/nope"), "probe_get_protocol_404.json"),
        (client.get("/runs/nope"), "probe_get_run_404.json"),
        (
            client.post("/runs", {"data": {"protocolId": "nope"}}),
            "probe_post_runs_bad_protocol.json",
        ),
    ):
        rec = recorded(name)
        assert (reply.status, reply.body) == (rec["status_code"], rec["body"])
        assert reply.headers["content-length"] == rec["headers"]["content-length"]
        assert reply.headers["opentrons-version"] == "4"
    assert client.get("/runs/nope/commands").status == 404
    assert client.get("/runs/nope/commandErrors").status == 404
    assert client.action("nope", "play").status == 404
    assert client.request("DELETE", "/runs/nope").status == 404
    assert client.request("DELETE", "/protocols/nope").status == 404


def test_run_already_active_takeover_and_delete(make_sim: Any, clock: VirtualClock) -> None:
    sim, client = make_sim()
    protocol_id = ready_protocol(client, clock, "ot2_delay.py")
    idle_run = new_run(client, protocol_id)
    # A new run takes over an idle current run, which becomes stopped and not current.
    run_id = new_run(client, protocol_id)
    old = client.get(f"/runs/{idle_run}")
    assert norm(old.body) == norm(recorded("probe_run_while_running.json")["body"])
    client.action(run_id, "play")
    clock.advance(3.0)
    busy = client.post("/runs", {"data": {"protocolId": protocol_id}})
    rec = recorded("probe2_post_run_while_running.json")
    assert (busy.status, busy.body) == (409, rec["body"])
    delete = client.request("DELETE", f"/runs/{run_id}")
    rec = recorded("probe2_delete_run_while_running.json")
    assert (delete.status, delete.body) == (409, rec["body"])
    patch = client.request("PATCH", f"/runs/{run_id}", {"data": {"current": False}})
    assert patch.status == 409
    assert patch.body["errors"][0]["id"] == "RunNotIdle"
    in_use = client.request("DELETE", f"/protocols/{protocol_id}")
    assert in_use.status == 409
    assert in_use.body["errors"][0]["id"] == "ProtocolUsedByRun"
    listing = client.get("/runs")
    assert listing.body["links"] == {"current": {"href": f"/runs/{run_id}"}}
    assert [r["current"] for r in listing.data] == [False, True]
    assert client.get("/runs?pageLength=1").body["meta"] == {"cursor": 1, "totalLength": 2}
    # Once stopped, the current run may be deleted (200 {}) and so may the protocol.
    client.action(run_id, "stop")
    clock.advance(sim.stop_s)
    assert client.get(f"/runs/{run_id}").data["status"] == "stopped"
    deleted = client.request("DELETE", f"/runs/{run_id}")
    assert (deleted.status, deleted.body) == (
        200,
        recorded("probe2_delete_stopped_current_run.json")["body"],
    )
    assert client.get("/runs").body["links"] == {}
    assert client.request("DELETE", f"/runs/{idle_run}").status == 200
    gone = client.request("DELETE", f"/protocols/{protocol_id}")
    assert (gone.status, gone.body) == (200, {})


def test_actions_on_a_run_that_is_not_current(make_sim: Any, clock: VirtualClock) -> None:
    sim, client = make_sim()
    protocol_id = ready_protocol(client, clock, "ot2_delay.py")
    first = new_run(client, protocol_id)
    new_run(client, protocol_id)
    rec = recorded("probe_pause.json")["body"]
    for action in ("pause", "play"):
        reply = client.action(first, action)
        assert reply.status == 409
        assert norm(reply.body) == norm(rec)
        assert reply.body["errors"][0]["detail"] == f"Run {first} is not the current run"
    patch = client.request("PATCH", f"/runs/{first}", {"data": {"current": False}})
    assert patch.status == 409
    assert patch.body["errors"][0]["id"] == "RunStopped"


# --------------------------------------------------------------------------------------------
# Run control: pause, play, stop, time
# --------------------------------------------------------------------------------------------


def test_pause_freezes_time_and_play_resumes(make_sim: Any, clock: VirtualClock) -> None:
    sim, client = make_sim()  # time_scale 1: waitForDuration(30) takes 30 s
    run_id = new_run(client, ready_protocol(client, clock, "ot2_delay.py"))
    invalid = client.action(run_id, "jump")
    assert (invalid.status, invalid.body) == (422, recorded("probe2_post_bad_action.json")["body"])
    not_running = client.action(run_id, "pause")
    assert not_running.status == 409
    assert not_running.body["errors"][0]["id"] == "RunActionNotAllowed"
    assert not_running.body["errors"][0]["detail"] == "Cannot pause a run that is not running."
    assert client.action(run_id, "play").status == 201
    clock.advance(9.0)  # home (8 s) done, loadLabware... running
    run = client.get(f"/runs/{run_id}")
    assert norm(run.body)["data"]["status"] == "running"
    assert run.data["startedAt"] == "2026-01-01T00:00:00.000000+00:00"
    before = client.get(f"/runs/{run_id}/commands?pageLength=1")
    assert before.data[0]["status"] == "running"
    pause = client.action(run_id, "pause")
    assert pause.status == 201
    assert norm(pause.body) == norm(recorded("probe2_pause.json")["body"])
    clock.advance(1000.0)
    paused = client.get(f"/runs/{run_id}")
    assert norm(paused.body) == norm(recorded("probe2_run_after_pause.json")["body"])
    after = client.get(f"/runs/{run_id}/commands?pageLength=1")
    assert after.body == before.body  # nothing moved while paused
    resume = client.action(run_id, "play")
    assert norm(resume.body) == norm(recorded("probe2_resume_play.json")["body"])
    assert run_to_end(client, clock, run_id) == ["running", "finishing", "succeeded"]
    final = client.get(f"/runs/{run_id}")
    assert norm(final.body) == norm(recorded("probe2_delay_run_final.json")["body"])
    commands = client.get(f"/runs/{run_id}/commands?cursor=0&pageLength=100").data
    assert len(commands) == 54
    wait = next(c for c in commands if c["commandType"] == "waitForDuration")
    assert wait["params"] == {"seconds": 30.0}
    started = datetime.fromisoformat(wait["startedAt"])
    completed = datetime.fromisoformat(wait["completedAt"])
    assert (completed - started).total_seconds() == 30.0
    # The pickUpTip running at the pause (8.3 s .. 13.3 s) froze for the 1000 s pause.
    frozen = next(c for c in commands if c["id"] == before.data[0]["id"])
    assert frozen["commandType"] == "pickUpTip"
    took = datetime.fromisoformat(frozen["completedAt"]) - datetime.fromisoformat(
        frozen["startedAt"]
    )
    assert took.total_seconds() == pytest.approx(5.0 + 1000.0)
    terminal = client.action(run_id, "play")
    assert terminal.status == 409
    assert terminal.body["errors"][0]["detail"] == "The run has already stopped."


def test_stop_goes_through_stop_requested(make_sim: Any, clock: VirtualClock) -> None:
    sim, client = make_sim(stop_s=4.0)
    run_id = new_run(client, ready_protocol(client, clock, "ot2_delay.py"))
    client.action(run_id, "play")
    clock.advance(8.5)
    stop = client.action(run_id, "stop")
    assert stop.status == 201
    assert norm(stop.body) == norm(recorded("probe2_stop.json")["body"])
    assert client.get(f"/runs/{run_id}").data["status"] == "stop-requested"
    cancelled = client.get(f"/runs/{run_id}/commands").data[-1]
    assert cancelled["status"] == "failed"
    assert cancelled["error"]["errorType"] == "RunStoppedError"
    assert client.action(run_id, "stop").status == 409
    clock.advance(4.0)
    run = client.get(f"/runs/{run_id}")
    assert run.data["status"] == "stopped"
    assert run.data["errors"] == []
    assert run.data["completedAt"] == "2026-01-01T00:00:12.500000+00:00"
    assert list(run.data) == list(recorded("probe2_run_after_stop.json")["body"]["data"])
    # Stopping a run that was never played stops it at once, without startedAt.
    idle = new_run(client, run.data["protocolId"])
    client.action(idle, "stop")
    stopped = client.get(f"/runs/{idle}").data
    assert stopped["status"] == "stopped"
    assert "startedAt" not in stopped


def test_command_pagination(make_sim: Any, clock: VirtualClock) -> None:
    sim, client = make_sim(time_scale=0.01)
    run_id = new_run(client, ready_protocol(client, clock, "ot2_delay.py"))
    idle = client.get(f"/runs/{run_id}/commands")
    assert idle.body == {"data": [], "links": {}, "meta": {"cursor": 0, "totalLength": 0}}
    client.action(run_id, "play")
    clock.advance(0.2)
    running = client.get(f"/runs/{run_id}/commands?pageLength=1")
    total = running.body["meta"]["totalLength"]
    assert running.data[0]["status"] == "running"
    assert (
        running.body["links"]["current"]["meta"]["index"]
        == total - 1
        == running.body["meta"]["cursor"]
    )
    assert "result" not in running.data[0] and "completedAt" not in running.data[0]
    run_to_end(client, clock, run_id)
    default = client.get(f"/runs/{run_id}/commands")
    assert default.body["meta"] == {"cursor": 34, "totalLength": 54}  # last 20, not from 0
    assert len(default.data) == 20
    assert default.body["links"]["current"]["meta"]["index"] == 53
    page = client.get(f"/runs/{run_id}/commands?cursor=0&pageLength=5")
    assert [c["commandType"] for c in page.data] == [
        "home",
        "loadLabware",
        "loadLabware",
        "loadPipette",
        "pickUpTip",
    ]
    tail = client.get(f"/runs/{run_id}/commands?cursor=50&pageLength=20")
    assert tail.body["meta"] == {"cursor": 50, "totalLength": 54}
    assert [c["commandType"] for c in tail.data] == [
        "dispense",
        "dropTip",
        "waitForDuration",
        "comment",
    ]
    assert client.get(f"/runs/{run_id}/commands?cursor=x").status == 422
    single = client.get(f"/runs/{run_id}/commands/{tail.data[0]['id']}")
    assert single.data["result"]["volume"] == 50.0
    assert client.get(f"/runs/{run_id}/commands/nope").body["errors"][0]["id"] == "CommandNotFound"


# --------------------------------------------------------------------------------------------
# Faults
# --------------------------------------------------------------------------------------------


def test_fail_at_command(make_sim: Any, clock: VirtualClock) -> None:
    log: list[dict[str, Any]] = []
    sim, client = make_sim(faults=Faults(fail_at_command=5), action_log=log.append)
    run_id = new_run(client, ready_protocol(client, clock, "ot2_ok.py"))
    client.action(run_id, "play")
    assert run_to_end(client, clock, run_id, step=0.01)[-2:] == ["finishing", "failed"]
    run = client.get(f"/runs/{run_id}").data
    inner = run["errors"][0]["wrappedErrors"][0]["wrappedErrors"][0]
    assert inner["errorType"] == "TipNotAttachedError"
    commands = client.get(f"/runs/{run_id}/commands?cursor=0").data
    assert [c["status"] for c in commands] == ["succeeded"] * 5 + ["failed"]
    assert commands[5]["commandType"] == "aspirate"
    assert commands[5]["error"] == inner
    # Without a cursor the page starts at the failed command (robot-server 8.1).
    assert client.get(f"/runs/{run_id}/commands").body["meta"] == {"cursor": 5, "totalLength": 6}
    physical = [e["commandType"] for e in log if e["event"] == "command"]
    assert physical == ["pickUpTip"]  # the aspirate failed; nothing after it happened


def test_awaiting_recovery_on_flex(make_sim: Any, clock: VirtualClock) -> None:
    sim, client = make_sim("Flex", faults={"awaiting_recovery_at_command": 4})
    run_id = new_run(client, ready_protocol(client, clock, "flex_ok.py"))
    client.action(run_id, "play")
    statuses = run_to_end_or(client, clock, run_id, "awaiting-recovery")
    assert statuses[-1] == "awaiting-recovery"
    run = client.get(f"/runs/{run_id}").data
    assert run["hasEverEnteredErrorRecovery"] is True
    assert run["errors"] == []
    listing = client.get(f"/runs/{run_id}/commands")
    assert listing.body["links"]["currentlyRecoveringFrom"]["meta"]["index"] == 4
    failed = listing.data[-1]
    assert (failed["commandType"], failed["status"]) == ("pickUpTip", "failed")
    assert failed["error"]["isDefined"] is True
    assert failed["error"]["errorType"] == "tipPhysicallyMissing"
    assert client.action(run_id, "pause").status == 409
    assert client.action(run_id, "resume-from-recovery").status == 201
    assert run_to_end(client, clock, run_id)[-1] == "succeeded"
    physical = [e["commandType"] for e in sim.action_entries() if e["event"] == "command"]
    assert physical == ["aspirate", "dispense", "dropTipInPlace"]
    with pytest.raises(ValueError, match="only on a Flex"):
        RobotSimulator(clock, "OT-2", faults={"awaiting_recovery_at_command": 1})


def run_to_end_or(client: Client, clock: VirtualClock, run_id: str, status: str) -> list[str]:
    seen: list[str] = []
    for _ in range(10_000):
        now = client.get(f"/runs/{run_id}").data["status"]
        if not seen or seen[-1] != now:
            seen.append(now)
        if now == status or now in TERMINAL:
            return seen
        clock.advance(0.5)
    raise AssertionError(seen)


def test_door_open_blocks_a_flex(make_sim: Any, clock: VirtualClock) -> None:
    sim, client = make_sim("Flex")
    run_id = new_run(client, ready_protocol(client, clock, "flex_ok.py"))
    client.action(run_id, "play")
    clock.advance(9.0)
    sim.set_faults(door_open=True)
    assert client.get(f"/runs/{run_id}").data["status"] == "blocked-by-open-door"
    frozen = client.get(f"/runs/{run_id}/commands").body
    clock.advance(500.0)
    assert client.get(f"/runs/{run_id}/commands").body == frozen
    refused = client.action(run_id, "play")
    assert refused.status == 409
    assert refused.body["errors"][0]["detail"] == "Front door or top window is currently open."
    sim.set_faults(door_open=False)
    assert client.get(f"/runs/{run_id}").data["status"] == "paused"
    assert client.action(run_id, "play").status == 201
    assert run_to_end(client, clock, run_id) == ["running", "finishing", "succeeded"]
    # With the door open before the first play, play is accepted but the run is blocked.
    sim.set_faults(door_open=True)
    second = new_run(client, client.get(f"/runs/{run_id}").data["protocolId"])
    assert client.action(second, "play").status == 201
    assert client.get(f"/runs/{second}").data["status"] == "blocked-by-open-door"
    queued = client.get(f"/runs/{second}/commands").data
    assert [(c["commandType"], c["status"]) for c in queued] == [("home", "queued")]
    sim.set_faults(door_open=False)
    assert client.get(f"/runs/{second}").data["status"] == "paused"
    client.action(second, "play")
    assert run_to_end(client, clock, second)[-1] == "succeeded"


def test_estop_on_flex(make_sim: Any, clock: VirtualClock) -> None:
    sim, client = make_sim("Flex", faults=Faults(estop="not-attached"))
    protocol_id = ready_protocol(client, clock, "flex_ok.py")
    refused = client.post("/runs", {"data": {"protocolId": protocol_id}})
    assert refused.status == 403
    assert refused.body["errors"][0] == {
        "id": "EstopNotAttached",
        "title": "There is no Estop attached",
        "detail": "An estop must be attached to access this endpoint",
        "errorCode": "3009",
    }
    sim.set_faults(estop=None)
    run_id = new_run(client, protocol_id)
    client.action(run_id, "play")
    clock.advance(9.0)
    sim.set_faults(estop="engaged")
    assert client.get(f"/runs/{run_id}").data["status"] == "finishing"
    assert client.action(run_id, "stop").status == 403
    clock.advance(sim.stop_s)
    run = client.get(f"/runs/{run_id}").data
    assert run["status"] == "failed"
    assert run["errors"][0]["errorCode"] == "3008"


def test_offline_closes_without_reply(make_sim: Any) -> None:
    sim, client = make_sim()
    sim.set_faults(offline=True)
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError)):
        client.get("/health")
    sim.set_faults(offline=False)
    assert client.get("/health").status == 200


def test_slow_and_not_ok_analysis(make_sim: Any, clock: VirtualClock) -> None:
    sim, client = make_sim(analysis_delay_s=1.0, faults=Faults(analysis_extra_delay_s=60.0))
    reply = client.upload_file("ot2_ok.py")
    protocol_id, analysis_id = reply.data["id"], reply.data["analysisSummaries"][0]["id"]
    path = f"/protocols/{protocol_id}/analyses/{analysis_id}"
    clock.advance(60.9)
    assert client.get(path).data["status"] == "pending"
    clock.advance(0.1)
    assert client.get(path).data["result"] == "ok"
    sim.set_faults(analysis_extra_delay_s=0.0, analysis_not_ok=True)
    reply = client.upload_file("ot2_delay.py")
    clock.advance(1.0)
    analysis = client.get(
        f"/protocols/{reply.data['id']}/analyses/{reply.data['analysisSummaries'][0]['id']}"
    ).data
    assert (analysis["status"], analysis["result"]) == ("completed", "not-ok")
    assert analysis["errors"][0]["errorType"] == "ExceptionInProtocolError"
    assert len(analysis["commands"]) == 54


# --------------------------------------------------------------------------------------------
# The physical action log
# --------------------------------------------------------------------------------------------


def test_action_log_is_exact_and_written_once(
    make_sim: Any, clock: VirtualClock, tmp_path: Path
) -> None:
    log_path = tmp_path / "actions.jsonl"
    sim, client = make_sim(action_log=log_path)
    run_id = new_run(client, ready_protocol(client, clock, "ot2_delay.py"))
    client.action(run_id, "play")
    # home 8 s, 2 x loadLabware + loadPipette 0.3 s, pickUpTip 5 s, aspirate 3 s.
    clock.advance(8.3 + 5.0 + 3.0 - 0.001)
    for _ in range(3):  # polling at the same moment must not log anything twice
        client.get(f"/runs/{run_id}")
    assert [e["commandType"] for e in sim.action_entries() if e["event"] == "command"] == [
        "pickUpTip"
    ]
    clock.advance(0.001)
    client.get(f"/runs/{run_id}/commands")
    assert [e["commandType"] for e in sim.action_entries() if e["event"] == "command"] == [
        "pickUpTip",
        "aspirate",
    ]
    run_to_end(client, clock, run_id, step=7.0)
    client.get(f"/runs/{run_id}")
    sim.sync()
    entries = [json.loads(line) for line in log_path.read_text().splitlines()]
    assert entries == sim.action_entries()
    physical = [e for e in entries if e["event"] == "command"]
    dispenses = [e for e in physical if e["commandType"] == "dispense"]
    wells = [f"{r}{c}" for c in range(1, 13) for r in "ABCDEFGH"]
    assert [e["well"] for e in dispenses] == wells[12:24]  # each destination fed once
    assert {e["volume"] for e in dispenses} == {50.0}
    assert {(e["labware"], e["slot"]) for e in dispenses} == {
        ("corning_96_wellplate_360ul_flat", "2")
    }
    assert [e["commandType"] for e in physical] == [
        "pickUpTip",
        "aspirate",
        "dispense",
        "dropTip",
    ] * 12
    commands = client.get(f"/runs/{run_id}/commands?cursor=0&pageLength=100").data
    by_id = {c["id"]: c for c in commands}
    for entry in physical:  # stamped with the simulated completion time of that command
        assert entry["time"] == by_id[entry["commandId"]]["completedAt"]
        assert entry["runId"] == run_id
    events = [e["event"] for e in entries]
    assert events[:3] == ["protocol_upload", "run_created", "run_action"]
    assert events[-1] == "run_finished"
    assert events.count("run_finished") == 1
    times = [e["time"] for e in entries]
    assert times == sorted(times)


PAUSE_THEN_FAIL = b"""
from opentrons import protocol_api

metadata = {"protocolName": "pause, delay, then a Python error"}
requirements = {"robotType": "OT-2", "apiLevel": "2.15"}


def run(protocol: protocol_api.ProtocolContext) -> None:
    protocol.pause("swap the plate")
    protocol.delay(seconds=10)
    raise RuntimeError("medium bottle empty")
"""


def test_protocol_pause_waits_for_play_and_late_python_error_fails_run(
    make_sim: Any, clock: VirtualClock
) -> None:
    sim, client = make_sim()
    upload = client.upload(("pause_fail.py", PAUSE_THEN_FAIL))
    protocol_id = upload.data["id"]
    analysis = client.get(
        f"/protocols/{protocol_id}/analyses/{upload.data['analysisSummaries'][0]['id']}"
    ).data
    assert analysis["result"] == "not-ok"
    assert [c["commandType"] for c in analysis["commands"]] == [
        "home",
        "waitForResume",
        "waitForDuration",
    ]
    assert analysis["errors"][0]["detail"].startswith("RuntimeError [line 11]: ")
    run_id = new_run(client, protocol_id)
    client.action(run_id, "play")
    clock.advance(8.0)  # home done; protocol.pause() now waits for an operator
    assert client.get(f"/runs/{run_id}").data["status"] == "paused"
    clock.advance(3600.0)
    assert client.get(f"/runs/{run_id}").data["status"] == "paused"
    client.action(run_id, "play")
    clock.advance(9.999)
    assert client.get(f"/runs/{run_id}").data["status"] == "running"
    clock.advance(0.001)
    run = client.get(f"/runs/{run_id}").data
    assert run["status"] == "finishing"
    assert run["errors"][0]["errorType"] == "ExceptionInProtocolError"
    assert "medium bottle empty" in run["errors"][0]["detail"]
    assert run_to_end(client, clock, run_id) == ["finishing", "failed"]
    commands = client.get(f"/runs/{run_id}/commands").data
    assert [c["status"] for c in commands] == ["succeeded"] * 3
    assert client.get(f"/runs/{run_id}/commandErrors").data == []


def test_main_rejects_bad_arguments() -> None:
    from labctl.simulators.opentrons_robot import main

    with pytest.raises(SystemExit) as exc:
        main(["--robot", "OT-3"])
    assert exc.value.code == 2


def test_background_analysis_answers_at_once(make_sim: Any, clock: VirtualClock) -> None:
    sim, client = make_sim(background_analysis=True, analysis_delay_s=1.0)
    # A protocol no other test uploaded, so the process-wide cache cannot answer it.
    source = (PROTOCOLS / "ot2_ok.py").read_bytes() + f"\n# {uuid.uuid4()}\n".encode()
    upload = client.upload(("fresh.py", source))
    assert upload.status == 201
    path = f"/protocols/{upload.data['id']}/analyses/{upload.data['analysisSummaries'][0]['id']}"
    assert client.get(path).data["status"] == "pending"
    run_id = new_run(client, upload.data["id"])  # waits for the analysis to exist
    assert client.get(path).data["status"] == "pending"  # ...but its delay has not passed
    clock.advance(1.0)
    assert client.get(path).data["result"] == "ok"
    client.action(run_id, "play")
    assert run_to_end(client, clock, run_id)[-1] == "succeeded"


# --------------------------------------------------------------------------------------------
# Run-time parameters
# --------------------------------------------------------------------------------------------

# A protocol whose first tip is a run-time parameter (Protocol API 2.18+). ``{tag}`` makes
# each test's file unique, so the process-wide analysis cache holds nothing of it yet.
TIP_PROTOCOL = """\
from opentrons import protocol_api

metadata = {{"protocolName": "first tip as a parameter {tag}"}}
requirements = {{"robotType": "OT-2", "apiLevel": "2.18"}}


def add_parameters(parameters):
    parameters.add_int(
        variable_name="first_tip",
        display_name="First tip",
        description="first unused tip",
        default=0,
        minimum=0,
        maximum=191,
    )
    parameters.add_int(
        variable_name="rounds",
        display_name="Rounds",
        default=1,
        minimum=1,
        maximum=3,
    )


def run(protocol: protocol_api.ProtocolContext) -> None:
    racks = [protocol.load_labware("opentrons_96_tiprack_300ul", s) for s in (1, 4)]
    plate = protocol.load_labware("corning_96_wellplate_360ul_flat", 2)
    p300 = protocol.load_instrument("p300_single_gen2", "right", tip_racks=racks)
    first = protocol.params.first_tip
    p300.starting_tip = racks[first // 96].wells()[first % 96]
    for _ in range(protocol.params.rounds):
        for well in ("A1", "B1", "C1"):
            p300.pick_up_tip()
            p300.aspirate(50, plate[well])
            p300.dispense(50, plate[well])
            p300.drop_tip()
"""

FIRST_TIP = {
    "displayName": "First tip",
    "variableName": "first_tip",
    "description": "first unused tip",
    "type": "int",
    "min": 0.0,
    "max": 191.0,
    "default": 0.0,
}
ROUNDS = {
    "displayName": "Rounds",
    "variableName": "rounds",
    "type": "int",
    "min": 1.0,
    "max": 3.0,
    "default": 1.0,
}


def tip_protocol(tag: str) -> bytes:
    return TIP_PROTOCOL.format(tag=tag).encode()


def picks(commands: list[dict[str, Any]] | tuple[Any, ...]) -> list[tuple[str, str]]:
    """(slot, well) of every pickUpTip, the slot from the loadLabware commands."""
    slots = {
        c["result"]["labwareId"]: c["params"]["location"]["slotName"]
        for c in commands
        if c["commandType"] == "loadLabware" and "result" in c
    }
    return [
        (slots[c["params"]["labwareId"]], c["params"]["wellName"])
        for c in commands
        if c["commandType"] == "pickUpTip"
    ]


def without_ids(analysis: Any) -> list[dict[str, Any]]:
    """An analysis' commands with ids and times out and positions rounded (compare two)."""
    out = []
    for c in analysis.commands:
        c = {k: v for k, v in c.items() if k not in ("id", "createdAt", "startedAt", "completedAt")}
        out.append(c)
    text = json.dumps(out, sort_keys=True)
    text = _UUID.sub("<id>", text)
    text = re.sub(r"(\d+\.\d{6})\d+", r"\1", text)
    return json.loads(text)


class Opentrons:
    """Counts the simulator's opentrons analyses (not derived, not cached)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        module = default_analysis()
        self.calls: list[dict[str, Any]] = []
        real = module._analyse_locked_out

        def counted(files: Any, values: Any, **kw: Any) -> Any:
            self.calls.append(dict(values))
            return real(files, values, **kw)

        monkeypatch.setattr(module, "_analyse_locked_out", counted)


def test_run_time_parameter_values_of_a_run_are_echoed_and_honoured(
    make_sim: Any, clock: VirtualClock
) -> None:
    # TIP_PROTOCOL loads a GEN2 p300, which a GEN1 one cannot stand in for.
    sim, client = make_sim(time_scale=0.01, instruments={"right": "p300_single_gen2"})
    upload = client.upload(("tips.py", tip_protocol("echo")))
    assert upload.status == 201
    pid, aid = upload.data["id"], upload.data["analysisSummaries"][0]["id"]
    analysis = client.get(f"/protocols/{pid}/analyses/{aid}").data
    assert analysis["result"] == "ok"
    assert analysis["runTimeParameters"] == [
        {**FIRST_TIP, "value": 0.0},
        {**ROUNDS, "value": 1.0},
    ]
    created = client.post(
        "/runs", {"data": {"protocolId": pid, "runTimeParameterValues": {"first_tip": 17}}}
    )
    assert created.status == 201
    expected = [{**FIRST_TIP, "value": 17.0}, {**ROUNDS, "value": 1.0}]
    assert created.data["runTimeParameters"] == expected
    run_id = created.data["id"]
    client.action(run_id, "play")
    assert run_to_end(client, clock, run_id)[-1] == "succeeded"
    assert client.get(f"/runs/{run_id}").data["runTimeParameters"] == expected
    # Tips 17, 18, 19 of the racks: column 3 of the rack in slot 1.
    logged = [
        (e["slot"], e["well"])
        for e in sim.action_entries()
        if e["event"] == "command" and e["commandType"] == "pickUpTip"
    ]
    assert logged == [("1", "B3"), ("1", "C3"), ("1", "D3")]
    created_event = [e for e in sim.action_entries() if e["event"] == "run_created"]
    assert created_event[0]["runTimeParameterValues"] == {"first_tip": 17}
    # A run without values runs the defaults.
    second = new_run(client, pid)
    assert client.get(f"/runs/{second}").data["runTimeParameters"][0]["value"] == 0.0


def test_derived_analyses_are_those_of_opentrons_and_need_no_new_analysis(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ot = Opentrons(monkeypatch)
    files = [("a.py", tip_protocol("derive"))]
    assert picks(analyse_protocol(files).commands) == [("1", "A1"), ("1", "B1"), ("1", "C1")]
    learned = analyse_protocol([("b.py", files[0][1])], {"first_tip": 5})  # another name
    assert picks(learned.commands) == [("1", "F1"), ("1", "G1"), ("1", "H1")]
    assert ot.calls == [{}, {"first_tip": 5}]
    assert analyse_protocol(files, {"first_tip": 5}) is learned  # cached by content
    # Now any tip position in a rack seen is derived, without opentrons.
    derived = analyse_protocol(files, {"first_tip": 40})
    assert ot.calls == [{}, {"first_tip": 5}]
    assert picks(derived.commands) == [("1", "A6"), ("1", "B6"), ("1", "C6")]
    assert derived.run_time_parameters == ({**FIRST_TIP, "value": 40.0}, {**ROUNDS, "value": 1.0})
    real = analyse_protocol(files, {"first_tip": 40}, derive=False)
    assert ot.calls[-1] == {"first_tip": 40}
    assert without_ids(derived) == without_ids(real)
    # A tip in a rack no analysis has shown yet needs opentrons once, which shows it.
    crossing = analyse_protocol(files, {"first_tip": 95})
    assert ot.calls[-1] == {"first_tip": 95}
    assert picks(crossing.commands) == [("1", "H12"), ("4", "A1"), ("4", "B1")]
    calls = len(ot.calls)
    in_rack_2 = analyse_protocol(files, {"first_tip": 150})
    assert len(ot.calls) == calls
    assert picks(in_rack_2.commands) == [("4", "G7"), ("4", "H7"), ("4", "A8")]
    assert without_ids(in_rack_2) == without_ids(
        analyse_protocol(files, {"first_tip": 150}, derive=False)
    )


def test_a_parameter_that_changes_more_than_tips_is_always_analysed(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    ot = Opentrons(monkeypatch)
    files = [("a.py", tip_protocol("rounds"))]
    analyse_protocol(files)
    two = analyse_protocol(files, {"rounds": 2})
    assert len(picks(two.commands)) == 6  # opentrons ran it: twice the rounds
    assert ot.calls == [{}, {"rounds": 2}]
    # The files now count as doing more than moving tips: nothing is derived any more.
    moved = analyse_protocol(files, {"first_tip": 3})
    assert ot.calls[-1] == {"first_tip": 3}
    assert picks(moved.commands) == [("1", "D1"), ("1", "E1"), ("1", "F1")]
    analyse_protocol(files, {"first_tip": 4})
    assert ot.calls[-1] == {"first_tip": 4}


def test_values_at_upload_are_analysed_and_a_change_starts_a_new_analysis(
    make_sim: Any,
) -> None:
    sim, client = make_sim()
    source = tip_protocol("upload")

    def upload(values: str | None) -> Reply:
        extra = {"runTimeParameterValues": values} if values is not None else None
        return client.upload(("tips.py", source), extra=extra)

    first = upload('{"first_tip": 5}')
    assert first.status == 201
    pid = first.data["id"]
    aid = first.data["analysisSummaries"][0]["id"]
    analysis = client.get(f"/protocols/{pid}/analyses/{aid}").data
    assert analysis["runTimeParameters"][0] == {**FIRST_TIP, "value": 5.0}
    assert picks(analysis["commands"])[0] == ("1", "F1")
    # The same files and values: robot-server keeps the analysis.
    again = upload('{"first_tip": 5, "rounds": 1}')  # rounds at its default: the same values
    assert (again.status, again.data["id"]) == (200, pid)
    assert [s["id"] for s in again.data["analysisSummaries"]] == [aid]
    # Other values: the same protocol, analysed again.
    other = upload('{"first_tip": 9}')
    assert (other.status, other.data["id"]) == (200, pid)
    summaries = other.data["analysisSummaries"]
    assert len(summaries) == 2 and summaries[0] == {"id": aid, "status": "completed"}
    newest = client.get(f"/protocols/{pid}/analyses/{summaries[1]['id']}").data
    assert newest["runTimeParameters"][0]["value"] == 9.0
    assert picks(newest["commands"])[0] == ("1", "B2")
    # No values now means the defaults, which differ from the last analysis' 9.
    assert len(upload(None).data["analysisSummaries"]) == 3
    # A run with the latest analysis' values uses it as it is.
    run_id = new_run(client, pid)
    assert client.get(f"/runs/{run_id}").data["runTimeParameters"][0]["value"] == 0.0
    assert upload("{not json").status == 500
    bad = upload("[1, 2]")
    assert bad.status == 422 and bad.body["errors"][0]["id"] == "InvalidRequest"


def test_invalid_run_time_parameter_values_are_refused(make_sim: Any) -> None:
    sim, client = make_sim()
    upload = client.upload(("tips.py", tip_protocol("invalid")))
    pid = upload.data["id"]

    def post(values: Any) -> Reply:
        return client.post("/runs", {"data": {"protocolId": pid, "runTimeParameterValues": values}})

    beyond = post({"first_tip": 192})
    assert beyond.status == 500
    error = beyond.body["errors"][0]
    assert (error["id"], error["errorCode"]) == ("UnexpectedError", "4000")
    assert "between 0 and 191" in error["detail"]
    unknown = post({"last_tip": 3})
    assert unknown.status == 500
    assert "last_tip is not defined" in unknown.body["errors"][0]["detail"]
    fraction = post({"first_tip": 2.5})
    assert (
        fraction.status == 500 and "must be of type 'int'" in fraction.body["errors"][0]["detail"]
    )
    shape = post([1, 2])
    assert shape.status == 422 and shape.body["errors"][0]["source"] == {
        "pointer": "/data/runTimeParameterValues"
    }
    assert client.get("/runs").data == []  # none of them made a run


def test_quiet_only_without_a_run_under_way_or_a_request_that_acts(
    make_sim: Any, clock: VirtualClock
) -> None:
    # A dry run sleeps through alarm checks while the robot is quiet (labctl.devices.QuietWatch).
    sim, client = make_sim()
    t0 = clock.now()
    clock.advance(60)
    assert sim.quiet_since(t0) and sim.next_change() is None
    assert client.get("/health").status == 200  # reads change nothing
    assert sim.quiet_since(t0)
    protocol_id = ready_protocol(client, clock, "ot2_ok.py")
    assert not sim.quiet_since(t0)  # the upload came after t0
    run_id = new_run(client, protocol_id)
    client.action(run_id, "play")
    playing = clock.now()
    clock.advance(1)
    assert not sim.quiet_since(clock.now()) and sim.next_change() == clock.now()
    run_to_end(client, clock, run_id)
    assert sim.quiet_since(playing + timedelta(seconds=1)) and sim.next_change() is None
    sim.set_faults(offline=True)
    assert not sim.quiet_since(playing + timedelta(seconds=1))


class Ahead:
    """Counts the analyses the simulator makes per process ("now": a request waits)."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        module = default_analysis()
        self.module = module
        self.calls: list[tuple[str, dict[str, Any]]] = []
        real = module._analyse_locked_out

        def counted(files: Any, values: Any, pool: str = "now") -> Any:
            self.calls.append((pool, dict(values)))
            return real(files, values, pool=pool)

        monkeypatch.setattr(module, "_analyse_locked_out", counted)
        module.speculate(True)

    def now(self) -> list[dict[str, Any]]:
        return [v for pool, v in self.calls if pool == "now"]

    def settle(self, files: list[tuple[str, bytes]]) -> None:
        """Wait until nothing is queued or being analysed ahead for these files (without
        dropping the queued ones, as a request does). An analysis ahead queues the next
        before it counts as done, so an empty look means all are done."""
        prefix = source_key(files) + "|"
        while True:
            with self.module._lock:
                mine = [f for k, f in self.module._ahead.in_flight.items() if k.startswith(prefix)]
            if not mine:
                return
            for future in mine:
                future.exception(timeout=60)


@pytest.fixture
def ahead(monkeypatch: pytest.MonkeyPatch) -> Iterator[Ahead]:
    counter = Ahead(monkeypatch)
    yield counter
    counter.module.speculate(False)


def test_analyses_ahead_let_later_values_be_derived_while_nobody_waits(ahead: Ahead) -> None:
    files = [("p1.py", tip_protocol("ahead"))]
    first = analyse_protocol(files, {"first_tip": 27})
    assert ahead.now() == [{"first_tip": 27}]
    ahead.settle(files)
    # In the other process, one analysis: first_tip moved to the second rack's first tip,
    # which shows both what the parameter does and where that rack sits.
    assert [v for pool, v in ahead.calls if pool == "ahead"] == [{"first_tip": 96}]
    # The next plates' values, in either rack, under any file name: derived.
    for value in (45, 101, 150):
        derived = analyse_protocol([(f"p{value}.py", files[0][1])], {"first_tip": value})
        real = analyse_protocol(files, {"first_tip": value}, derive=False)
        assert without_ids(derived) == without_ids(real)
    assert [v for v in ahead.now() if v != {"first_tip": 27}] == [
        {"first_tip": 45},
        {"first_tip": 101},
        {"first_tip": 150},
    ]  # only the derive=False comparisons ran opentrons while waited for
    assert picks(first.commands)[0] == ("1", "D4")


def test_with_one_rack_the_probe_moved_by_one_follows_the_failed_one(ahead: Ahead) -> None:
    one_rack = (
        tip_protocol("one rack")
        .replace(b"maximum=191", b"maximum=95")
        .replace(b"for s in (1, 4)]", b"for s in (1,)]")
    )
    files = [("one.py", one_rack)]
    analyse_protocol(files, {"first_tip": 5})
    ahead.settle(files)
    # 96 is out of the parameter's range: that analysis fails, and 6 shows what it does.
    assert [v for pool, v in ahead.calls if pool == "ahead"] == [
        {"first_tip": 96},
        {"first_tip": 6},
    ]
    derived = analyse_protocol([("one2.py", one_rack)], {"first_tip": 50})
    assert ahead.now() == [{"first_tip": 5}]  # derived
    assert picks(derived.commands)[0] == ("1", "C7")


def test_a_request_waits_for_the_analysis_ahead_rather_than_start_its_own(
    ahead: Ahead,
) -> None:
    files = [("q.py", tip_protocol("race"))]
    analyse_protocol(files, {"first_tip": 3})
    # At once, before the analyses ahead can have finished: the request waits for them.
    derived = analyse_protocol(files, {"first_tip": 7})
    assert ahead.now() == [{"first_tip": 3}]
    assert picks(derived.commands) == [("1", "H1"), ("1", "A2"), ("1", "B2")]


def test_renamed_files_are_read_once_and_keep_their_roles() -> None:
    from labctl.simulators.opentrons_analysis import read_protocol

    data = tip_protocol("names")
    a = read_protocol([("job-a.py", data)])
    b = read_protocol([("job-b.py", data)])
    assert a.files == (("job-a.py", "main"),) and b.files == (("job-b.py", "main"),)
    assert a.content_hash != b.content_hash and a.metadata == b.metadata


def test_a_dead_analysis_process_is_replaced(ahead: Ahead) -> None:
    import os
    import signal

    module = ahead.module
    module.warm_up()
    pool = module._pools.executors["now"]
    for pid in list(pool._processes):  # noqa: SLF001 - killing the child is the point
        os.kill(pid, signal.SIGKILL)
    analysis = analyse_protocol([("dead.py", tip_protocol("dead"))], {"first_tip": 2})
    assert analysis.result == "ok"
    assert module._pools.executors["now"] is not pool


def test_a_parameter_is_probed_once_when_the_probe_lands_before_the_request(
    ahead: Ahead, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The probe moved by one can finish first and become the reference; the request's own
    # analysis, still under way, maps the parameter: a probe moved by two would repeat it.
    module = ahead.module
    files = [("land.py", tip_protocol("land"))]
    source = source_key(files)
    counted = module._analyse_locked_out

    def request_lands_last(files: Any, values: Any, pool: str = "now") -> Any:
        if pool == "now":
            for _ in range(1000):  # until the probe's analysis is the reference
                with module._lock:
                    if source in module._tip_models:
                        break
                threading.Event().wait(0.01)
        return counted(files, values, pool=pool)

    monkeypatch.setattr(module, "_analyse_locked_out", request_lands_last)
    analyse_protocol(files, {"first_tip": 10})
    ahead.settle(files)
    assert module._tip_models[source].ref_values["first_tip"] == 96  # the probe was first
    # The request's analysis mapped the parameter: no probe moved by one follows it.
    assert [v for pool, v in ahead.calls if pool == "ahead"] == [{"first_tip": 96}]
    derived = analyse_protocol([("land2.py", files[0][1])], {"first_tip": 40})
    assert ahead.now() == [{"first_tip": 10}]  # derived, not analysed while waited for
    assert picks(derived.commands)[0] == ("1", "A6")


def test_turning_speculation_off_drops_the_analyses_ahead_still_queued(ahead: Ahead) -> None:
    module = ahead.module
    started, gate = threading.Event(), threading.Event()
    busy: Future[None] = Future()

    def hold() -> None:
        started.set()
        gate.wait(10)

    module._ahead.ensure_workers()
    module._ahead.queue.put((0, next(module._ahead.order), busy, hold))
    assert started.wait(10)
    queued: Future[None] = Future()
    with module._lock:
        module._ahead.in_flight["some-source|[]"] = queued
    module._ahead.queue.put((1, next(module._ahead.order), queued, lambda: None))
    module.speculate(False)
    assert queued.cancelled()
    assert "some-source|[]" not in module._ahead.in_flight
    assert module._ahead.queue.empty()
    gate.set()
    busy.result(timeout=10)  # the one under way finishes


def test_analysis_processes_warm_on_a_clean_protocol_and_ignore_ctrl_c() -> None:
    import signal

    from labctl.simulators.opentrons_analysis_child import WARM_PROTOCOL, child_analyse

    pools = default_analysis()._pools
    warm = pools.call(
        "now",
        child_analyse,
        [("warm.py", WARM_PROTOCOL)],
        {},
        "OT-2 Standard",
    )
    assert warm.result == "ok" and not warm.errors
    assert any(c["commandType"] == "aspirate" for c in warm.commands)
    for kind in ("now", "ahead"):
        assert pools.call(kind, signal.getsignal, signal.SIGINT) == signal.SIG_IGN


def test_analysis_processes_fork_from_one_server_and_analyses_ahead_yield() -> None:
    import os

    from labctl.simulators import opentrons_analysis as module

    module.warm_up()
    pools = module.default_analysis()._pools.executors
    pids = {kind: list(pools[kind]._processes) for kind in module._KINDS}  # noqa: SLF001
    # (A pool starts a process only when none is idle: how many "ahead" ones run depends on
    # how busy earlier tests kept them.)
    assert 1 <= len(pids["ahead"]) <= module._AHEAD_PROCESSES and len(pids["now"]) == 1

    def parent(pid: int) -> int:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat.rsplit(")", 1)[1].split()[1])

    # One fork server (it imported opentrons once) is the parent of every analysis process;
    # none is a fork of this process, whose threads a fork would copy mid-flight.
    parents = {parent(pid) for kind_pids in pids.values() for pid in kind_pids}
    assert len(parents) == 1 and os.getpid() not in parents
    now = os.getpriority(os.PRIO_PROCESS, pids["now"][0])
    for pid in pids["ahead"]:
        assert os.getpriority(os.PRIO_PROCESS, pid) == now + module._AHEAD_NICENESS


def test_an_analysis_service_of_its_own_ends_its_processes_and_threads_when_closed() -> None:
    from labctl.simulators.opentrons_analysis import AnalysisService

    files = [("own.py", tip_protocol("a service of its own"))]
    with AnalysisService() as service:
        service.speculate(True)
        assert service.analyse(files, {"first_tip": 1}).result == "ok"
        pools = service._pools.executors  # noqa: SLF001 - which processes it started
        pids = [pid for pool in pools.values() for pid in pool._processes]  # noqa: SLF001
        assert pids
    with pytest.raises(RuntimeError, match="closed"):
        service.analyse(files)

    def ended(pid: int) -> bool:
        stat = Path(f"/proc/{pid}/stat")
        return not stat.exists() or stat.read_text().rsplit(")", 1)[1].split()[0] == "Z"

    for pid in pids:
        for _ in range(100):
            if ended(pid):
                break
            threading.Event().wait(0.1)
        assert ended(pid)
    assert not [t for t in service._ahead._threads if t.is_alive()]  # noqa: SLF001


def test_reading_new_files_does_not_wait_behind_an_analysis() -> None:
    from labctl.simulators import opentrons_analysis as module

    # An analysis that takes long (its protocol sleeps while opentrons simulates it).
    slow = (
        tip_protocol("slow")
        .replace(b"def run(protocol", b"import time\n\n\ndef run(protocol")
        .replace(b"    p300 = ", b"    time.sleep(3)\n    p300 = ", 1)
    )
    assert b"time.sleep(3)" in slow
    started = threading.Event()
    analysis: Future[Any] = Future()

    def analyse() -> None:
        started.set()
        analysis.set_result(analyse_protocol([("slow.py", slow)], {"first_tip": 1}))

    threading.Thread(target=analyse, daemon=True).start()
    assert started.wait(10)
    threading.Event().wait(0.5)  # the analysis is under way in the "now" process
    info = module.read_protocol([("other.py", tip_protocol("read while busy"))])
    assert info.robot_type == "OT-2 Standard"
    assert not analysis.done()  # the read was answered while the analysis still ran
    assert analysis.result(timeout=60).result == "ok"


def test_replacing_ids_shares_what_holds_none() -> None:
    from labctl.simulators.opentrons_wire import replace_ids as _replace_ids

    definition = {"wells": {"A1": {"depth": 10}}, "parameters": {"loadName": "old"}}
    params = {"wellName": "A1", "volume": 50}
    commands = [
        {"commandType": "loadLabware", "result": {"labwareId": "old", "definition": definition}},
        {"commandType": "aspirate", "params": params, "notes": ("old", 1)},
    ]
    new = _replace_ids(commands, {"old": "new"})
    assert new[0]["result"]["labwareId"] == "new" and new[1]["notes"] == ["new", 1]
    assert new[0]["result"]["definition"] is definition  # never walked, never copied
    assert definition["parameters"]["loadName"] == "old"  # (a definition holds no ids)
    assert new[1]["params"] is params  # nothing replaced inside: shared
    assert commands[0]["result"]["labwareId"] == "old"  # the original is untouched
    assert _replace_ids(params, {"old": "new"}) is params


def test_with_analysis_overlap_the_clock_alone_says_when_an_analysis_is_done(
    make_sim: Any, clock: VirtualClock
) -> None:
    # Dry runs: the upload is answered at once and the analysis goes on meanwhile; it reads
    # pending until analysis_delay_s has passed on the clock, however soon it really ends,
    # and completed from then on, the reply waiting for it if it has to.
    sim, client = make_sim(analysis_delay_s=5.0, analysis_overlap=True)
    slow = (
        tip_protocol("overlap")
        .replace(b"def run(protocol", b"import time\n\n\ndef run(protocol")
        .replace(b"    p300 = ", b"    time.sleep(2)\n    p300 = ", 1)
    )
    reply = client.upload(("overlap.py", slow))
    assert reply.status == 201
    pid, aid = reply.data["id"], reply.data["analysisSummaries"][0]["id"]
    protocol = sim.protocols.by_id[pid]
    assert not protocol.analyses[0].future.done()  # answered while it is analysed
    clock.advance(4.0)
    protocol.analyses[0].future.result(timeout=60)
    assert client.get(f"/protocols/{pid}/analyses/{aid}").data["status"] == "pending"
    clock.advance(1.0)
    done = client.get(f"/protocols/{pid}/analyses/{aid}").data
    assert (done["status"], done["result"]) == ("completed", "ok")
    assert [c["commandType"] for c in done["commands"]].count("pickUpTip") == 3


def test_the_analysis_fork_server_loads_opentrons_and_ends_without_teardown(
    tmp_path: Path,
) -> None:
    import os
    import subprocess
    import sys

    # What the fork server's preload does, in a process of its own: opentrons is loaded, and
    # at exit the process ends at once, so a handler registered earlier (Python's own
    # teardown stands for it here) never runs.
    script = (
        "import atexit, sys\n"
        "atexit.register(print, 'torn down')\n"
        "import labctl.simulators.analysis_server\n"
        "print('opentrons' in sys.modules and 'opentrons.cli.analyze' in sys.modules)\n"
    )
    env = dict(os.environ, OT_API_CONFIG_DIR=str(tmp_path / "ot"))
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, env=env, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["True"]


# --------------------------------------------------------------------------------------------
# Attached instruments (notes/devices-opentrons-sim.md)
# --------------------------------------------------------------------------------------------

# The pipettes labctl's generated feed protocols load on an OT-2 (one load_instrument a line).
FEED_PIPETTES = b"""from opentrons import protocol_api

requirements = {"robotType": "OT-2", "apiLevel": "2.18"}


def run(ctx: protocol_api.ProtocolContext) -> None:
    tips = ctx.load_labware("opentrons_96_filtertiprack_1000ul", "10")
    small = ctx.load_labware("opentrons_96_filtertiprack_20ul", "7")
    pip = ctx.load_instrument("p1000_single_gen2", "right", tip_racks=[tips])
    small_pip = ctx.load_instrument("p20_single_gen2", "left", tip_racks=[small])
    pip.pick_up_tip()
    pip.drop_tip()
    small_pip.pick_up_tip()
    small_pip.drop_tip()
"""
OT2_INSTRUMENTS = {
    "data": [
        {
            "mount": "left",
            "instrumentType": "pipette",
            "instrumentModel": "p20_single_v2.2",
            "serialNumber": "P20SV2220230101A01",
            "subsystem": "pipette_left",
            "ok": True,
            "data": {"channels": 1, "min_volume": 1.0, "max_volume": 20.0},
            "instrumentName": "p20_single_gen2",
        },
        {
            "mount": "right",
            "instrumentType": "pipette",
            "instrumentModel": "p1000_single_v2.2",
            "serialNumber": "P1KSV2220230101A02",
            "subsystem": "pipette_right",
            "ok": True,
            "data": {"channels": 1, "min_volume": 100.0, "max_volume": 1000.0},
            "instrumentName": "p1000_single_gen2",
        },
    ],
    "meta": {"cursor": 0, "totalLength": 2},
}


def test_instruments_are_served_as_robot_server_serves_them(make_sim: Any) -> None:
    sim, client = make_sim(instruments=None)  # the default: labctl's OT-2 pipettes
    reply = client.get("/instruments")
    assert reply.status == 200
    assert reply.body == OT2_INSTRUMENTS
    assert list(reply.body["data"][0]) == list(OT2_INSTRUMENTS["data"][0])  # key order too
    assert client.get("/instruments?refresh=true").body == OT2_INSTRUMENTS
    assert client.get("/instruments", version=None).status == 422
    legacy = client.get("/pipettes")
    assert legacy.body == {
        "left": {
            "model": "p20_single_v2.2",
            "name": "p20_single_gen2",
            "tip_length": 0.0,
            "mount_axis": "z",
            "plunger_axis": "b",
            "id": "P20SV2220230101A01",
        },
        "right": {
            "model": "p1000_single_v2.2",
            "name": "p1000_single_gen2",
            "tip_length": 0.0,
            "mount_axis": "a",
            "plunger_axis": "c",
            "id": "P1KSV2220230101A02",
        },
    }
    assert client.get("/pipettes", version=None).body == {
        "message": "header.opentrons-version: field required",
        "errorCode": "4000",
    }
    assert client.get("/modules").body == {"data": [], "meta": {"cursor": 0, "totalLength": 0}}
    # robot-server's stock simulated OT-2, one mount emptied: the left one is not listed.
    stock, stock_client = make_sim(instruments={"right": "p300_single_v1"})
    body = stock_client.get("/instruments").body
    assert body["meta"] == {"cursor": 0, "totalLength": 1}
    assert [(i["mount"], i["instrumentName"], i["instrumentModel"]) for i in body["data"]] == [
        ("right", "p300_single", "p300_single_v1")
    ]
    assert body["data"][0]["serialNumber"] == "P300S20230101A02"  # a GEN1 v1 barcode
    assert stock_client.get("/pipettes").body["left"] == {
        "model": None,
        "name": None,
        "tip_length": None,
        "mount_axis": "z",
        "plunger_axis": "b",
        "id": None,
    }


def test_a_flex_reports_firmware_offset_and_tip_state(make_sim: Any) -> None:
    sim, client = make_sim("Flex")
    data = client.get("/instruments").data
    assert [(i["mount"], i["instrumentName"], i["instrumentModel"]) for i in data] == [
        ("left", "p50_single_flex", "p50_single_v3.6"),
        ("right", "p1000_single_flex", "p1000_single_v3.7"),
    ]
    right = data[1]
    assert list(right) == [
        "mount",
        "instrumentType",
        "instrumentModel",
        "serialNumber",
        "subsystem",
        "ok",
        "firmwareVersion",
        "data",
        "instrumentName",
        "state",
    ]
    assert right["serialNumber"] == "P1KSV3720230101A02"
    assert right["data"] == {
        "channels": 1,
        "min_volume": 5.0,
        "max_volume": 1000.0,
        "calibratedOffset": {"offset": {"x": 0.0, "y": 0.0, "z": 0.0}, "source": "default"},
    }
    assert right["state"] == {"tipDetected": False}
    assert client.get("/pipettes").body["right"]["mount_axis"] == "z_r"


def test_pipette_names_models_and_volumes_are_those_of_opentrons() -> None:
    from opentrons_shared_data.pipette import load_data
    from opentrons_shared_data.pipette import pipette_load_name_conversions as names
    from opentrons_shared_data.pipette.types import PIPETTE_API_NAMES_MAP, LiquidClasses

    from labctl.simulators.opentrons_instruments import FLEX_LOAD_NAMES, PIPETTES

    for spec in PIPETTES.values():
        model = names.convert_pipette_name(spec.name)  # type: ignore[arg-type]
        assert str(model) == spec.model
        d = load_data.load_definition(
            model.pipette_type, model.pipette_channels, model.pipette_version, model.oem_type
        )
        liquid = d.liquid_properties[LiquidClasses.default]
        assert (d.channels.value, liquid.min_volume, liquid.max_volume) == (
            spec.channels,
            spec.min_volume,
            spec.max_volume,
        ), spec.name
        assert tuple(d.pipette_backcompat_names) == spec.back_compat
    for load_name, name in FLEX_LOAD_NAMES.items():
        assert PIPETTE_API_NAMES_MAP[load_name].value == name


@pytest.mark.parametrize(
    ("config", "message"),
    [
        ({"middle": "p20_single_gen2"}, "unknown mount"),
        ({"left": "p21_single"}, "unknown pipette"),
        ({"right": "flex_1channel_1000"}, "not a pipette for the OT-2"),
    ],
)
def test_instrument_config_is_checked(config: dict[str, str], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RobotSimulator(VirtualClock(), "OT-2", instruments=config)


def _failed_run(client: Client, clock: VirtualClock, source: bytes) -> dict[str, Any]:
    upload = client.upload(("feed.py", source))
    assert upload.status == 201, upload.body
    pid, aid = upload.data["id"], upload.data["analysisSummaries"][0]["id"]
    # The robot's analysis loads virtual pipettes: it does not see the missing one.
    assert client.get(f"/protocols/{pid}/analyses/{aid}").data["result"] == "ok"
    run_id = new_run(client, pid)
    assert client.action(run_id, "play").status == 201
    assert run_to_end(client, clock, run_id, step=0.01)[-2:] == ["finishing", "failed"]
    return client.get(f"/runs/{run_id}").data


def test_a_run_that_loads_a_pipette_not_attached_fails_at_load_pipette(
    make_sim: Any, clock: VirtualClock
) -> None:
    # Our feed protocol on robot-server's stock OT-2 (p300 GEN1 right, p10 GEN1 left).
    sim, client = make_sim(time_scale=0.01)  # the fixture's OT-2: STOCK_OT2_INSTRUMENTS
    run = _failed_run(client, clock, FEED_PIPETTES)
    commands = client.get(f"/runs/{run['id']}/commands?cursor=0&pageLength=50").data
    failed = commands[-1]
    assert [c["commandType"] for c in commands] == [
        "home",
        "loadLabware",
        "loadLabware",
        "loadPipette",
    ]
    assert failed["status"] == "failed"
    assert failed["params"]["pipetteName"] == "p1000_single_gen2"
    detail = "mount RIGHT: expected instrument p1000_single_gen2 but got p300_single_v1"
    inner = failed["error"]
    assert (inner["errorType"], inner["errorCode"], inner["detail"], inner["isDefined"]) == (
        "FailedToLoadPipetteError",
        "3010",
        detail,
        False,
    )
    outer = run["errors"][0]
    middle = outer["wrappedErrors"][0]
    assert (outer["errorType"], outer["errorCode"]) == ("ExceptionInProtocolError", "4000")
    assert outer["detail"] == (
        "ProtocolCommandFailedError [line 9]: Error 4000 GENERAL_ERROR"
        f" (ProtocolCommandFailedError): FailedToLoadPipetteError: {detail}"
    )
    assert (middle["errorType"], middle["detail"]) == (
        "ProtocolCommandFailedError",
        f"FailedToLoadPipetteError: {detail}",
    )
    assert middle["wrappedErrors"] == [inner]
    assert outer["id"] == middle["id"] != inner["id"]
    assert run["pipettes"] == []  # the pipette never loaded
    assert client.get(f"/runs/{run['id']}/commandErrors").data == [inner]
    assert client.get(f"/runs/{run['id']}/commands/{failed['id']}").data["error"] == inner


def test_an_empty_mount_fails_the_run_and_a_back_compatible_pipette_serves(
    make_sim: Any, clock: VirtualClock
) -> None:
    # The right mount serves (p1000_single_gen2); the left one is empty: the second load
    # fails, reading the serial number of nothing.
    sim, client = make_sim(time_scale=0.01, instruments={"right": "p1000_single_gen2"})
    run = _failed_run(client, clock, FEED_PIPETTES)
    inner = run["errors"][0]["wrappedErrors"][0]["wrappedErrors"][0]
    assert (inner["errorType"], inner["errorCode"], inner["detail"]) == (
        "PythonException",
        "4000",
        "KeyError: 'pipette_id'",
    )
    assert inner["errorInfo"] == {"args": "('pipette_id',)", "class": "KeyError"}
    assert run["errors"][0]["detail"].startswith("ProtocolCommandFailedError [line 10]: ")
    assert [p["pipetteName"] for p in run["pipettes"]] == ["p1000_single_gen2"]
    # A GEN2 p300 stands in for a protocol's GEN1 p300 (its back-compatible name).
    sim2, client2 = make_sim(time_scale=0.01, instruments={"right": "p300_single_gen2"})
    run_id = new_run(client2, ready_protocol(client2, clock, "ot2_ok.py"))
    client2.action(run_id, "play")
    assert run_to_end(client2, clock, run_id)[-1] == "succeeded"


def test_patch_error_bodies_are_robot_servers(make_sim: Any, clock: VirtualClock) -> None:
    sim, client = make_sim()
    protocol_id = ready_protocol(client, clock, "ot2_delay.py")
    first = new_run(client, protocol_id)
    second = new_run(client, protocol_id)

    def patch(run_id: str) -> Reply:
        return client.request("PATCH", f"/runs/{run_id}", {"data": {"current": False}})

    for run_id in (first, "nope"):  # robot-server asks "current?" before "exists?"
        reply = patch(run_id)
        assert reply.status == 409
        assert reply.body == {
            "errors": [
                {
                    "id": "RunStopped",
                    "title": "Run Stopped",
                    "detail": f"Cannot update {run_id} because it is not the current run.",
                    "errorCode": "4000",
                }
            ]
        }
    client.action(second, "play")
    clock.advance(3.0)
    busy = patch(second)
    assert (busy.status, busy.body) == (
        409,
        {
            "errors": [
                {
                    "id": "RunNotIdle",
                    "title": "Run is not idle.",
                    "detail": "Current run is not idle or stopped.",
                    "errorCode": "4001",
                }
            ]
        },
    )
    # Actions keep their own wording (recorded: probe_pause.json).
    assert client.action(first, "play").body["errors"][0]["detail"] == (
        f"Run {first} is not the current run"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--pipette", "middle=p20_single_gen2"],
        ["--pipette", "right"],
        ["--pipette", "right=flex_1channel_1000"],
        ["--robot", "Flex", "--pipette", "left=p20_single_gen2"],
    ],
)
def test_main_checks_the_pipettes(argv: list[str]) -> None:
    from labctl.simulators.opentrons_robot import main

    with pytest.raises(SystemExit) as exc:
        main(argv)
    assert exc.value.code == 2


def test_other_refusals_are_worded_as_robot_servers(make_sim: Any, clock: VirtualClock) -> None:
    sim, client = make_sim(analysis_delay_s=5.0)
    # The commands routes word an unknown run through ErrorDetails.from_exc.
    from_exc = {
        "errors": [
            {
                "id": "RunNotFound",
                "title": "Run Not Found",
                "detail": "Run nope was not found.",
                "meta": {
                    "type": "RunNotFoundError",
                    "code": "4000",
                    "message": "Run nope was not found.",
                    "detail": {"runId": "nope"},
                    "wrapping": [],
                },
                "errorCode": "4000",
            }
        ]
    }
    for path in ("/runs/nope/commands", "/runs/nope/commands/c1"):
        reply = client.get(path)
        assert (reply.status, reply.body) == (404, from_exc), path
    upload = client.upload_file("ot2_ok.py")
    pid, aid = upload.data["id"], upload.data["analysisSummaries"][0]["id"]
    pending = client.upload_file("ot2_ok.py")
    assert (pending.status, pending.body["errors"][0]["detail"]) == (
        503,
        f'Analysis "{aid}" is still pending.',
    )
    missing = client.get(f"/protocols/{pid}/analyses/nope")
    assert (missing.status, missing.body["errors"][0]) == (
        404,
        {
            "id": "AnalysisNotFound",
            "title": "Protocol Analysis Not Found",
            "detail": 'Analysis "nope" not found.',
            "errorCode": "4000",
        },
    )
