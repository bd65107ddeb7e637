"""OpentronsClient against a scripted HTTP server replaying Opentrons' recorded replies.

The server (stdlib http.server on 127.0.0.1, ephemeral port) is told the exact sequence of
requests to expect and answers each with a reply recorded from Opentrons' real robot-server
8.1 (shared/reference/opentrons-http/responses). It records every request, so the tests
assert what the driver sends (method, target, headers, body bytes) as well as how it reads
the answers. A VirtualClock makes polling take no wall time.
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import os
import socket
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from labctl.clock import VirtualClock
from labctl.drivers.opentrons_http import (
    Analysis,
    EngineError,
    FailedCommand,
    NotFound,
    OpentronsClient,
    ProtocolRejected,
    RobotHealth,
    RunPhase,
)
from labctl.errors import (
    DeviceBusy,
    DeviceCommunicationError,
    DeviceFault,
    DeviceNeedsOperator,
    DeviceTimeout,
    OperationLost,
)

RECORDINGS = Path(
    os.environ.get(
        "LABCTL_OPENTRONS_RECORDINGS",
        str(Path(__file__).parent / "fixtures" / "opentrons-http" / "responses"),
    )
)
PROTOCOLS = RECORDINGS.parent / "protocols"

TIP_DETAIL = "Pipette should have a tip attached, but does not."


def recording(name: str) -> dict[str, Any]:
    """One recorded exchange: {status_code, headers, body}."""
    rec = json.loads((RECORDINGS / f"{name}.json").read_text())
    if "status_code" not in rec:
        # probe2_delay_run_commands.json holds the bare 200 body only.
        rec = {"status_code": 200, "headers": {"content-type": "application/json"}, "body": rec}
    return rec


def body_of(name: str) -> Any:
    return recording(name)["body"]


# ---------------------------------------------------------------------- scripted server


@dataclass
class Reply:
    status: int
    body: bytes
    headers: dict[str, str] = field(default_factory=dict)
    close: bool = False  # drop the connection without answering
    hang: bool = False  # never answer (until the test ends)


def replay(name: str, *, status: int | None = None, body: Any = None) -> Reply:
    """The recorded reply ``name``; ``status``/``body`` replace the recorded ones if given."""
    rec = recording(name)
    # Content-Length is recomputed; date/server are noise.
    headers = {
        k: v for k, v in rec["headers"].items() if k not in ("content-length", "date", "server")
    }
    payload = rec["body"] if body is None else body
    return Reply(status or rec["status_code"], json.dumps(payload).encode(), headers)


def json_reply(status: int, body: Any) -> Reply:
    return Reply(status, json.dumps(body).encode(), {"content-type": "application/json"})


def first_page(name: str) -> Reply:
    """A recorded command page cut to one item, as ``pageLength=1`` returns it."""
    body = body_of(name)
    body["data"] = body["data"][:1]
    return replay(name, body=body)


@dataclass(frozen=True)
class Request:
    method: str
    target: str  # path and query, as sent
    headers: dict[str, str]  # lower-case names
    body: bytes


class ScriptedRobot:
    """Answers an expected sequence of (method, target) requests with scripted replies."""

    def __init__(self) -> None:
        self.steps: list[tuple[str, str, Reply]] = []
        self.requests: list[Request] = []
        self.unexpected: list[str] = []
        self.lock = threading.Lock()
        self.release = threading.Event()
        robot = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def handle_one(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length)
                headers = {k.lower(): v for k, v in self.headers.items()}
                with robot.lock:
                    robot.requests.append(Request(self.command, self.path, headers, body))
                    step = robot.steps.pop(0) if robot.steps else None
                if step is None or (step[0], step[1]) != (self.command, self.path):
                    robot.unexpected.append(f"{self.command} {self.path} (expected {step})")
                    reply = Reply(599, b"unexpected request")
                else:
                    reply = step[2]
                if reply.hang:
                    robot.release.wait(10)
                if reply.close or reply.hang:
                    self.close_connection = True
                    return
                self.send_response(reply.status)
                for key, value in reply.headers.items():
                    self.send_header(key, value)
                self.send_header("Content-Length", str(len(reply.body)))
                self.end_headers()
                self.wfile.write(reply.body)

            do_GET = do_POST = do_PATCH = do_DELETE = handle_one

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.01,), daemon=True)
        self.thread.start()

    def expect(self, method: str, target: str, reply: Reply) -> None:
        self.steps.append((method, target, reply))

    def calls(self) -> list[tuple[str, str]]:
        return [(r.method, r.target) for r in self.requests]

    def assert_done(self) -> None:
        assert self.unexpected == []
        assert self.steps == [], f"requests never made: {[s[:2] for s in self.steps]}"

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def robot() -> Iterator[ScriptedRobot]:
    server = ScriptedRobot()
    yield server
    server.close()


@pytest.fixture
def clock() -> VirtualClock:
    return VirtualClock()


@pytest.fixture
def client(robot: ScriptedRobot, clock: VirtualClock) -> OpentronsClient:
    return OpentronsClient("ot2-a", robot.url, clock)


def ids(prefix: str) -> tuple[str, str, str]:
    """(protocol id, analysis id, run id) of a recorded sequence."""
    proto = body_of(f"{prefix}_02_post_protocols")["data"]
    run = body_of(f"{prefix}_05_post_runs")["data"]
    return proto["id"], proto["analysisSummaries"][-1]["id"], run["id"]


def pending_analysis(aid: str) -> Reply:
    # A pending analysis is its summary as the upload answered it (DEVICES.md 1.3).
    return json_reply(200, {"data": {"id": aid, "status": "pending", "runTimeParameters": []}})


def assert_common_headers(robot: ScriptedRobot, version: str = "3") -> None:
    for req in robot.requests:
        assert req.headers["opentrons-version"] == version, req
        assert req.headers["accept"] == "application/json"


def parse_multipart(req: Request) -> list[tuple[str | None, str | None, bytes]]:
    """(part name, filename, content) of each part of a multipart/form-data request."""
    raw = b"Content-Type: " + req.headers["content-type"].encode() + b"\r\n\r\n" + req.body
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(raw)
    assert msg.is_multipart()
    return [
        (
            part.get_param("name", header="content-disposition"),
            part.get_filename(),
            part.get_payload(decode=True),
        )
        for part in msg.iter_parts()
    ]


# ---------------------------------------------------------------------- full sequences


def test_ot2_ok_sequence_sends_exactly_what_devices_md_describes(
    robot: ScriptedRobot, client: OpentronsClient, clock: VirtualClock
) -> None:
    pid, aid, rid = ids("ot2_ok")
    source = (PROTOCOLS / "ot2_ok.py").read_bytes()
    robot.expect("GET", "/health", replay("ot2_ok_01_health"))
    robot.expect("POST", "/protocols", replay("ot2_ok_02_post_protocols"))
    robot.expect("GET", f"/protocols/{pid}/analyses/{aid}", pending_analysis(aid))
    robot.expect(
        "GET", f"/protocols/{pid}/analyses/{aid}", replay("ot2_ok_03_get_analysis_completed")
    )
    robot.expect("POST", "/runs", replay("ot2_ok_05_post_runs"))
    robot.expect("POST", f"/runs/{rid}/actions", replay("ot2_ok_07_post_play"))
    robot.expect("GET", f"/runs/{rid}", replay("ot2_ok_06_get_run_idle"))
    robot.expect(
        "GET",
        f"/runs/{rid}/commands?cursor=0&pageLength=1",
        json_reply(200, {"data": [], "links": {}, "meta": {"cursor": 0, "totalLength": 0}}),
    )
    robot.expect("GET", f"/runs/{rid}", replay("ot2_ok_08_get_run_final"))
    robot.expect(
        "GET",
        f"/runs/{rid}/commands?cursor=0&pageLength=1",
        first_page("ot2_ok_09b_get_run_commands_cursor0"),
    )
    robot.expect("PATCH", f"/runs/{rid}", replay("ot2_ok_12_patch_run_not_current"))

    health = client.health()
    assert health == RobotHealth(
        name="opentrons-dev",
        robot_model="OT-2",
        api_version="8.1.0",
        fw_version="Virtual Smoothie",
        system_version="0.0.0",
        min_protocol_api=(2, 0),
        max_protocol_api=(2, 21),
        serial="simulator",
    )
    uploaded = client.upload_protocol("ot2_ok.py", source)
    assert (uploaded.protocol_id, uploaded.analysis_id) == (pid, aid)
    assert uploaded.robot_type == "OT-2"
    assert uploaded.protocol_name == "OT-2 example transfer"
    assert uploaded.reused is False  # 201

    analysis = client.wait_for_analysis(pid, aid)
    assert clock.monotonic() == 1.0  # one poll_interval_s between the pending and completed polls
    assert (analysis.status, analysis.result, analysis.errors) == ("completed", "ok", ())
    recorded_commands = body_of("ot2_ok_03_get_analysis_completed")["data"]["commands"]
    assert analysis.command_count == len(recorded_commands) == 9
    assert client.require_ok(analysis) is analysis

    assert client.create_run(pid) == rid
    client.play(rid)
    idle = client.run_status(rid)
    assert (idle.status, idle.phase, idle.commands_done, idle.commands_total) == (
        "idle",
        RunPhase.PENDING,
        0,
        0,
    )
    final = client.run_status(rid)
    assert (final.status, final.phase, final.error, final.current) == (
        "succeeded",
        RunPhase.SUCCEEDED,
        None,
        True,
    )
    assert (final.commands_done, final.commands_total) == (9, 9)
    assert final.current_command_id == "c18bc8ca-cd97-42ec-b63b-fad37d9ea2bf"
    client.release(rid)

    robot.assert_done()
    assert_common_headers(robot)
    by_call = {(r.method, r.target): r for r in robot.requests}
    runs = by_call[("POST", "/runs")]
    assert runs.body == json.dumps({"data": {"protocolId": pid}}, separators=(",", ":")).encode()
    assert runs.headers["content-type"] == "application/json"
    assert by_call[("POST", f"/runs/{rid}/actions")].body == b'{"data":{"actionType":"play"}}'
    assert by_call[("PATCH", f"/runs/{rid}")].body == b'{"data":{"current":false}}'
    assert by_call[("GET", "/health")].body == b""
    upload = by_call[("POST", "/protocols")]
    assert upload.headers["content-type"].startswith("multipart/form-data; boundary=")
    assert parse_multipart(upload) == [("files", "ot2_ok.py", source)]
    boundary = upload.headers["content-type"].split("boundary=", 1)[1]
    assert upload.body.startswith(
        f'--{boundary}\r\nContent-Disposition: form-data; name="files"; filename="ot2_ok.py"\r\n'.encode()
    )
    assert upload.body.endswith(f"\r\n--{boundary}--\r\n".encode())


def test_flex_ok_start_protocol_then_poll(robot: ScriptedRobot, client: OpentronsClient) -> None:
    pid, aid, rid = ids("flex_ok")
    source = (PROTOCOLS / "flex_ok.py").read_bytes()
    robot.expect("POST", "/protocols", replay("flex_ok_02_post_protocols"))
    robot.expect(
        "GET", f"/protocols/{pid}/analyses/{aid}", replay("flex_ok_03_get_analysis_completed")
    )
    robot.expect("POST", "/runs", replay("flex_ok_05_post_runs"))
    robot.expect("POST", f"/runs/{rid}/actions", replay("flex_ok_07_post_play"))
    robot.expect("GET", f"/runs/{rid}", replay("flex_ok_08_get_run_final"))
    robot.expect(
        "GET",
        f"/runs/{rid}/commands?cursor=0&pageLength=1",
        first_page("flex_ok_09b_get_run_commands_cursor0"),
    )
    robot.expect(
        "GET",
        f"/runs/{rid}/commandErrors?cursor=0&pageLength=100",
        replay("flex_ok_10_get_run_command_errors"),
    )

    started = client.start_protocol("flex_ok.py", source)
    assert (started.protocol_id, started.analysis_id, started.run_id) == (pid, aid, rid)
    assert started.robot_type == "Flex"
    assert started.command_count == len(
        body_of("flex_ok_03_get_analysis_completed")["data"]["commands"]
    )
    status = client.run_status(rid)
    assert (status.phase, status.commands_done, status.commands_total) == (
        RunPhase.SUCCEEDED,
        10,
        10,
    )
    assert client.failed_command(rid) is None  # no command errors: no second request

    robot.assert_done()
    assert_common_headers(robot)


@pytest.mark.parametrize("prefix", ["ot2_ok", "flex_ok"])
def test_health_maps_robot_model(
    robot: ScriptedRobot, client: OpentronsClient, prefix: str
) -> None:
    robot.expect("GET", "/health", replay(f"{prefix}_01_health"))
    health = client.health()
    expected = {"ot2_ok": ("OT-2", (2, 0)), "flex_ok": ("Flex", (2, 15))}[prefix]
    assert (health.robot_model, health.min_protocol_api) == expected
    assert health.max_protocol_api == (2, 21)


# ---------------------------------------------------------------------- failing protocols


@pytest.mark.parametrize("prefix,line", [("ot2_notip", 11), ("flex_notip", 12)])
def test_not_ok_analysis_is_refused_before_any_run(
    robot: ScriptedRobot, client: OpentronsClient, prefix: str, line: int
) -> None:
    pid, aid, _ = ids(prefix)
    robot.expect("POST", "/protocols", replay(f"{prefix}_02_post_protocols"))
    robot.expect(
        "GET", f"/protocols/{pid}/analyses/{aid}", replay(f"{prefix}_03_get_analysis_completed")
    )

    with pytest.raises(DeviceFault) as info:
        client.start_protocol(f"{prefix}.py", b"# no tip\n")
    err = info.value
    assert err.device == "ot2-a"
    assert err.device_code == "3005"  # innermost TipNotAttachedError
    assert "not-ok; refusing to run" in str(err)
    assert f"ProtocolCommandFailedError [line {line}]" in err.detail
    assert TIP_DETAIL in err.detail
    robot.assert_done()
    assert ("POST", "/runs") not in robot.calls()  # the robot would have accepted it


@pytest.mark.parametrize("prefix,line", [("ot2_notip", 11), ("flex_notip", 12)])
def test_failed_run_flattens_nested_error_and_finds_failed_command(
    robot: ScriptedRobot, client: OpentronsClient, prefix: str, line: int
) -> None:
    _, _, rid = ids(prefix)
    robot.expect("GET", f"/runs/{rid}", replay(f"{prefix}_08_get_run_final"))
    robot.expect(
        "GET",
        f"/runs/{rid}/commands?cursor=0&pageLength=1",
        first_page(f"{prefix}_09b_get_run_commands_cursor0"),
    )
    robot.expect(
        "GET",
        f"/runs/{rid}/commandErrors?cursor=0&pageLength=100",
        replay(f"{prefix}_10_get_run_command_errors"),
    )
    # Without a cursor the robot pages around its current command: the failed aspirate.
    robot.expect(
        "GET", f"/runs/{rid}/commands?pageLength=1", replay(f"{prefix}_09_get_run_commands")
    )
    robot.expect("PATCH", f"/runs/{rid}", replay(f"{prefix}_12_patch_run_not_current"))

    status = client.run_status(rid)
    assert (status.status, status.phase) == ("failed", RunPhase.FAILED)
    assert (status.commands_done, status.commands_total) == (5, 5)
    assert status.error is not None
    recorded = body_of(f"{prefix}_08_get_run_final")["data"]["errors"][0]
    assert status.error == EngineError(
        error_id=recorded["id"],
        detail=recorded["detail"],
        error_type="TipNotAttachedError",
        error_code="3005",
        root_detail=TIP_DETAIL,
        outer_error_type="ExceptionInProtocolError",
        outer_error_code="4000",
    )
    assert status.error.detail.startswith(f"ProtocolCommandFailedError [line {line}]")

    failed = client.failed_command(rid)
    page = body_of(f"{prefix}_09_get_run_commands")
    assert isinstance(failed, FailedCommand)
    assert failed.command_id == page["data"][0]["id"]
    assert (failed.command_type, failed.index) == ("aspirate", 4)
    assert (failed.error.error_type, failed.error.error_code, failed.error.detail) == (
        "TipNotAttachedError",
        "3005",
        TIP_DETAIL,
    )
    client.release(rid)
    robot.assert_done()
    assert_common_headers(robot)


# ---------------------------------------------------------------------- HTTP error mapping


def test_post_runs_409_run_already_active_is_busy(
    robot: ScriptedRobot, client: OpentronsClient
) -> None:
    robot.expect("POST", "/runs", replay("probe2_post_run_while_running"))
    with pytest.raises(DeviceBusy) as info:
        client.create_run("p1")
    assert str(info.value) == "ot2-a: POST /runs: robot busy with another run [device code 4001]"
    assert info.value.device_code == "4001"
    assert info.value.command == "POST /runs"


def test_get_run_404_is_operation_lost_with_robot_detail(
    robot: ScriptedRobot, client: OpentronsClient
) -> None:
    # The robot answered and has no such run: not "unreachable", and not to be asked again.
    robot.expect("GET", "/runs/nope", replay("probe_get_run_404"))
    with pytest.raises(OperationLost) as info:
        client.run_status("nope")
    assert str(info.value) == (
        "ot2-a: GET /runs/nope: RunNotFound: Error 4000 GENERAL_ERROR (RunNotFoundError): "
        "Run nope was not found. [device code 4000]"
    )


def test_post_runs_404_unknown_protocol(robot: ScriptedRobot, client: OpentronsClient) -> None:
    robot.expect("POST", "/runs", replay("probe_post_runs_bad_protocol"))
    with pytest.raises(DeviceFault) as info:
        client.create_run("nope")
    assert "ProtocolNotFound" in str(info.value)
    assert robot.requests[0].body == b'{"data":{"protocolId":"nope"}}'


def test_upload_422_files_invalid(robot: ScriptedRobot, client: OpentronsClient) -> None:
    robot.expect("POST", "/protocols", replay("probe_post_protocols_bad_python"))
    with pytest.raises(ProtocolRejected) as info:
        client.upload_protocol("bad.py", b"metadata = {(\n")
    assert info.value.error_id == "ProtocolFilesInvalid"
    assert (
        info.value.detail
        == "protocol rejected: ProtocolFilesInvalid: '(' was never closed (bad.py, line 1)"
    )
    assert info.value.device_code == "4000"


def test_upload_422_robot_type_mismatch(robot: ScriptedRobot, client: OpentronsClient) -> None:
    # Same error shape as the recorded ProtocolFilesInvalid, other id (DEVICES.md 1.3).
    body = body_of("probe_post_protocols_bad_python")
    body["errors"][0].update(
        id="ProtocolRobotTypeMismatch",
        title="Protocol For Different Robot Type",
        detail="This protocol is for Flex robots.",
    )
    robot.expect("POST", "/protocols", replay("probe_post_protocols_bad_python", body=body))
    with pytest.raises(ProtocolRejected) as info:
        client.upload_protocol("flex_ok.py", b"x")
    assert info.value.error_id == "ProtocolRobotTypeMismatch"
    assert "This protocol is for Flex robots." in str(info.value)


def test_estop_403_needs_operator(robot: ScriptedRobot, client: OpentronsClient) -> None:
    body = {
        "errors": [
            {
                "id": "EstopEngaged",
                "title": "E-stop Engaged",
                "detail": "Estop is currently engaged.",
                "errorCode": "3008",
            }
        ]
    }
    robot.expect("POST", "/runs", json_reply(403, body))
    with pytest.raises(DeviceNeedsOperator) as info:
        client.create_run("p1")
    assert (
        str(info.value)
        == "ot2-a: POST /runs: emergency stop: EstopEngaged: Estop is currently engaged. [device code 3008]"
    )


def test_action_on_not_current_run_is_fault(robot: ScriptedRobot, client: OpentronsClient) -> None:
    rid = "26801e55-f7ef-40e4-828d-00d6ee71773f"
    robot.expect("POST", f"/runs/{rid}/actions", replay("probe_pause"))
    with pytest.raises(DeviceFault) as info:
        client.pause(rid)
    assert f"RunStopped: Run {rid} is not the current run" in str(info.value)
    assert robot.requests[0].body == b'{"data":{"actionType":"pause"}}'


def test_release_409_run_not_idle_is_busy(robot: ScriptedRobot, client: OpentronsClient) -> None:
    robot.expect("PATCH", "/runs/r1", replay("probe2_delete_run_while_running"))
    with pytest.raises(DeviceBusy) as info:
        client.release("r1")
    assert "RunNotIdle: Run is currently active" in str(info.value)


def test_health_error_body_shape_is_understood(
    robot: ScriptedRobot, client: OpentronsClient
) -> None:
    # /health's own 422 shape: {"message", "errorCode"}.
    robot.expect("GET", "/health", replay("probe_health_no_version_header"))
    with pytest.raises(DeviceCommunicationError) as info:
        client.health()
    assert (
        str(info.value)
        == "ot2-a: GET /health: request refused: header.opentrons-version: field required [device code 4000]"
    )


def test_503_is_busy_and_non_json_500_is_fault(
    robot: ScriptedRobot, client: OpentronsClient
) -> None:
    robot.expect(
        "GET",
        "/health",
        json_reply(
            503,
            {
                "errors": [
                    {
                        "id": "HealthNotReady",
                        "detail": "motor controller not ready",
                        "errorCode": "4000",
                    }
                ]
            },
        ),
    )
    robot.expect(
        "GET", "/health", Reply(500, b"Internal Server Error", {"content-type": "text/plain"})
    )
    with pytest.raises(
        DeviceBusy, match="robot not ready: HealthNotReady: motor controller not ready"
    ):
        client.health()
    with pytest.raises(DeviceFault) as info:
        client.health()
    assert str(info.value) == "ot2-a: GET /health: HTTP 500: 'Internal Server Error'"


def test_a_route_the_robot_does_not_serve_is_not_found(
    robot: ScriptedRobot, client: OpentronsClient
) -> None:
    """robot-server answers an unknown route with its framework 404 (BadRequest "Not Found",
    robot_server/errors/exception_handlers.py): an older robot software lacks the route."""
    error = {"id": "BadRequest", "title": "Bad Request", "detail": "Not Found", "errorCode": "4000"}
    robot.expect("GET", "/instruments", json_reply(404, {"errors": [error]}))
    with pytest.raises(NotFound) as info:
        client.get("/instruments")
    assert str(info.value) == ("ot2-a: GET /instruments: BadRequest: Not Found [device code 4000]")
    assert isinstance(info.value, DeviceFault)


def test_link_losses_count_requests_the_link_failed_on(
    robot: ScriptedRobot, clock: VirtualClock
) -> None:
    """A refused, dropped or unanswered request may mean the robot restarted; an answer,
    even an error, does not."""
    client = OpentronsClient("ot2-a", robot.url, clock, timeout_s=0.2)
    robot.expect("GET", "/health", Reply(0, b"", close=True))
    robot.expect("GET", "/health", replay("ot2_ok_01_health"))
    robot.expect("POST", "/runs", replay("probe_post_runs_bad_protocol"))
    robot.expect("GET", "/health", Reply(0, b"", hang=True))
    with pytest.raises(DeviceCommunicationError):
        client.health()  # on a new connection: not a stale kept-alive one, sent once
    assert client.link_losses == 1
    client.health()
    with pytest.raises(DeviceFault):
        client.create_run("nope")
    assert client.link_losses == 1
    with pytest.raises(DeviceTimeout):
        client.health()
    assert client.link_losses == 2
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    refused = OpentronsClient("ot2-a", f"http://127.0.0.1:{port}", clock)
    with pytest.raises(DeviceCommunicationError):
        refused.health()
    assert refused.link_losses == 1


# ---------------------------------------------------------------------- transport failures


def test_connection_closed_without_reply_is_offline(
    robot: ScriptedRobot, client: OpentronsClient
) -> None:
    robot.expect("GET", "/health", Reply(0, b"", close=True))
    with pytest.raises(DeviceCommunicationError) as info:
        client.health()
    assert str(info.value) == "ot2-a: GET /health: robot offline: connection closed by the robot"


def test_connection_refused_is_offline(clock: VirtualClock) -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = OpentronsClient("flex-b", f"http://127.0.0.1:{port}", clock)
    with pytest.raises(DeviceCommunicationError) as info:
        client.run_status("r1")
    assert str(info.value) == "flex-b: GET /runs/r1: robot offline: connection refused"


def test_no_reply_is_timeout(robot: ScriptedRobot, clock: VirtualClock) -> None:
    robot.expect("GET", "/health", Reply(0, b"", hang=True))
    client = OpentronsClient("ot2-a", robot.url, clock, timeout_s=0.2)
    with pytest.raises(DeviceTimeout) as info:
        client.health()
    assert str(info.value) == "ot2-a: GET /health: robot offline: no reply within 0.2 s"


def test_garbled_body_is_communication_error(robot: ScriptedRobot, client: OpentronsClient) -> None:
    robot.expect(
        "GET", "/runs/r1", Reply(200, b"<html>\x00\xff garbage", {"content-type": "text/html"})
    )
    with pytest.raises(
        DeviceCommunicationError, match=r"GET /runs/r1: reply is not JSON \(HTTP 200\)"
    ):
        client.run_status("r1")


@pytest.mark.parametrize(
    "body,problem",
    [
        ({"data": []}, "data is not an object"),
        ({"data": {"id": "r1"}}, "'status' missing or not a string"),
        (
            {"data": {"id": "r1", "status": "failed", "errors": "boom"}},
            "'errors' missing or not a list",
        ),
        ([1, 2], "reply is not an object"),
    ],
)
def test_wrong_shape_is_communication_error(
    robot: ScriptedRobot, client: OpentronsClient, body: Any, problem: str
) -> None:
    robot.expect("GET", "/runs/r1", json_reply(200, body))
    with pytest.raises(DeviceCommunicationError) as info:
        client.run_status("r1")
    assert str(info.value) == f"ot2-a: GET /runs/r1: unexpected reply: {problem}"


def test_health_unknown_robot_model_is_communication_error(
    robot: ScriptedRobot, client: OpentronsClient
) -> None:
    body = body_of("ot2_ok_01_health")
    body["robot_model"] = "OT-9 Deluxe"
    robot.expect("GET", "/health", replay("ot2_ok_01_health", body=body))
    with pytest.raises(DeviceCommunicationError, match="unknown robot_model 'OT-9 Deluxe'"):
        client.health()


# ---------------------------------------------------------------------- run status mapping


@pytest.mark.parametrize(
    "status,phase",
    [
        ("idle", RunPhase.PENDING),
        ("running", RunPhase.RUNNING),
        ("finishing", RunPhase.RUNNING),
        ("stop-requested", RunPhase.RUNNING),
        ("paused", RunPhase.NEEDS_OPERATOR),
        ("blocked-by-open-door", RunPhase.NEEDS_OPERATOR),
        ("awaiting-recovery", RunPhase.NEEDS_OPERATOR),
        ("awaiting-recovery-paused", RunPhase.NEEDS_OPERATOR),
        ("awaiting-recovery-blocked-by-open-door", RunPhase.NEEDS_OPERATOR),
        ("succeeded", RunPhase.SUCCEEDED),
        ("failed", RunPhase.FAILED),
        ("stopped", RunPhase.STOPPED),
        ("levitating", RunPhase.NEEDS_OPERATOR),  # unknown to this client: a person looks
    ],
)
def test_every_engine_status_maps_to_a_phase(
    robot: ScriptedRobot, client: OpentronsClient, status: str, phase: RunPhase
) -> None:
    body = body_of("probe2_run_while_running")
    rid = body["data"]["id"]
    body["data"]["status"] = status
    robot.expect("GET", f"/runs/{rid}", replay("probe2_run_while_running", body=body))
    robot.expect(
        "GET",
        f"/runs/{rid}/commands?cursor=0&pageLength=1",
        first_page("probe2_delay_run_commands"),
    )
    result = client.run_status(rid)
    assert (result.status, result.phase) == (status, phase)
    # links.current is command 53 of 54: done while running, one more once terminal.
    assert result.commands_total == 54
    assert result.commands_done == (54 if phase.terminal else 53)


@pytest.mark.parametrize(
    "name,phase",
    [
        ("probe2_run_while_running", RunPhase.RUNNING),
        ("probe2_run_after_pause", RunPhase.NEEDS_OPERATOR),
        ("probe2_run_after_stop", RunPhase.STOPPED),
        ("probe2_delay_run_final", RunPhase.SUCCEEDED),
    ],
)
def test_recorded_run_states(
    robot: ScriptedRobot, client: OpentronsClient, name: str, phase: RunPhase
) -> None:
    rid = body_of(name)["data"]["id"]
    robot.expect("GET", f"/runs/{rid}", replay(name))
    robot.expect(
        "GET",
        f"/runs/{rid}/commands?cursor=0&pageLength=1",
        first_page("probe2_delay_run_commands"),
    )
    result = client.run_status(rid)
    assert result.phase is phase
    assert result.error is None
    assert result.current is True


def test_unknown_keys_and_omitted_fields_are_tolerated(
    robot: ScriptedRobot, client: OpentronsClient
) -> None:
    body = body_of("ot2_ok_06_get_run_idle")
    rid = body["data"]["id"]
    for key in ("errors", "current", "actions", "labware", "protocolId"):
        del body["data"][key]
    body["data"]["someFutureField"] = {"x": 1}
    body["links"] = {"self": "/runs/x"}
    robot.expect("GET", f"/runs/{rid}", replay("ot2_ok_06_get_run_idle", body=body))
    robot.expect(
        "GET",
        f"/runs/{rid}/commands?cursor=0&pageLength=1",
        json_reply(200, {"data": [], "meta": {"cursor": 0, "totalLength": 0}}),
    )
    status = client.run_status(rid)
    assert (status.phase, status.error, status.current, status.current_command_id) == (
        RunPhase.PENDING,
        None,
        False,
        None,
    )


def test_bad_run_is_fault(robot: ScriptedRobot, client: OpentronsClient) -> None:
    robot.expect(
        "GET",
        "/runs/r1",
        json_reply(200, {"data": {"id": "r1", "ok": False, "dataError": {"detail": "corrupt"}}}),
    )
    with pytest.raises(DeviceFault, match="robot cannot read run r1"):
        client.run_status("r1")


# ---------------------------------------------------------------------- analysis polling


def test_analysis_timeout_on_virtual_clock(robot: ScriptedRobot, clock: VirtualClock) -> None:
    client = OpentronsClient("ot2-a", robot.url, clock, poll_interval_s=2.0, analysis_timeout_s=7)
    # The wait doubles (2, 4, ...) and the last poll comes at the time-out, not after it.
    for _ in range(4):  # t = 0, 2, 6, 7
        robot.expect("GET", "/protocols/p/analyses/a", pending_analysis("a"))
    with pytest.raises(DeviceTimeout) as info:
        client.wait_for_analysis("p", "a")
    assert (
        str(info.value)
        == "ot2-a: GET /protocols/p/analyses/a: protocol analysis still pending after 7 s"
    )
    assert clock.monotonic() == 7.0
    robot.assert_done()


def test_require_ok_refuses_parameter_value_required(client: OpentronsClient) -> None:
    analysis = Analysis("p", "a", "completed", "parameter-value-required", "OT-2", (), (), 0)
    with pytest.raises(DeviceFault) as info:
        client.require_ok(analysis)
    assert (
        str(info.value)
        == "ot2-a: analysis of protocol p: protocol needs run-time parameter values; refusing to run"
    )


# ---------------------------------------------------------------------- run control, misc


def test_pause_play_stop_send_action_envelopes(
    robot: ScriptedRobot, client: OpentronsClient
) -> None:
    rid = body_of("probe2_run_while_running")["data"]["id"]
    robot.expect("POST", f"/runs/{rid}/actions", replay("probe2_pause"))
    robot.expect("POST", f"/runs/{rid}/actions", replay("probe2_resume_play"))
    robot.expect("POST", f"/runs/{rid}/actions", replay("probe2_stop"))
    client.pause(rid)
    client.play(rid)
    client.stop(rid)
    robot.assert_done()
    assert [r.body for r in robot.requests] == [
        b'{"data":{"actionType":"pause"}}',
        b'{"data":{"actionType":"play"}}',
        b'{"data":{"actionType":"stop"}}',
    ]
    assert all(r.headers["content-type"] == "application/json" for r in robot.requests)


def test_upload_with_labware_and_dedup_200(robot: ScriptedRobot, client: OpentronsClient) -> None:
    robot.expect("POST", "/protocols", replay("ot2_ok_02_post_protocols", status=200))
    labware = b'{"parameters": {"loadName": "custom_plate"}}'
    uploaded = client.upload_protocol("main.py", b"print(1)\n", [("custom_plate.json", labware)])
    assert uploaded.reused is True
    assert parse_multipart(robot.requests[0]) == [
        ("files", "main.py", b"print(1)\n"),
        ("files", "custom_plate.json", labware),
    ]


def test_run_time_parameters_go_with_the_upload_and_the_run(
    robot: ScriptedRobot, client: OpentronsClient
) -> None:
    """start_protocol sends the values twice: as the upload's ``runTimeParameterValues`` form
    field (a JSON string, so the robot analyses what will run) and in ``POST /runs``."""
    pid, aid, rid = ids("ot2_ok")
    source = (PROTOCOLS / "ot2_ok.py").read_bytes()
    robot.expect("POST", "/protocols", replay("ot2_ok_02_post_protocols"))
    robot.expect(
        "GET", f"/protocols/{pid}/analyses/{aid}", replay("ot2_ok_03_get_analysis_completed")
    )
    robot.expect("POST", "/runs", replay("ot2_ok_05_post_runs"))
    robot.expect("POST", f"/runs/{rid}/actions", replay("ot2_ok_07_post_play"))
    values = {"first_tip": 17, "dry_run": True, "volume": 2.5, "mode": "gentle"}
    started = client.start_protocol("ot2_ok.py", source, run_time_parameters=values)
    assert started.run_id == rid
    robot.assert_done()
    upload, runs = robot.requests[0], robot.requests[2]
    # Names in order, compact JSON: the same values are always the same bytes.
    text = b'{"dry_run":true,"first_tip":17,"mode":"gentle","volume":2.5}'
    assert runs.body == (
        b'{"data":{"protocolId":"' + pid.encode() + b'","runTimeParameterValues":' + text + b"}}"
    )
    boundary = upload.headers["content-type"].split("boundary=", 1)[1]
    digest = hashlib.sha256(b"ot2_ok.py\0" + source + b"\0").hexdigest()
    assert boundary == f"labctl-{digest[:32]}"  # from the files, as without values
    assert upload.body == (
        f"--{boundary}\r\n"
        'Content-Disposition: form-data; name="files"; filename="ot2_ok.py"\r\n'
        "Content-Type: text/x-python\r\n\r\n".encode()
        + source
        + f"\r\n--{boundary}\r\n"
        'Content-Disposition: form-data; name="runTimeParameterValues"\r\n\r\n'.encode()
        + text
        + f"\r\n--{boundary}--\r\n".encode()
    )
    assert parse_multipart(upload) == [
        ("files", "ot2_ok.py", source),
        ("runTimeParameterValues", None, text),
    ]


def test_no_or_empty_run_time_parameters_send_nothing_extra(
    robot: ScriptedRobot, client: OpentronsClient
) -> None:
    robot.expect("POST", "/runs", replay("ot2_ok_05_post_runs"))
    robot.expect("POST", "/runs", replay("ot2_ok_05_post_runs"))
    robot.expect("POST", "/protocols", replay("ot2_ok_02_post_protocols"))
    client.create_run("p1")
    client.create_run("p1", {})
    client.upload_protocol("main.py", b"print(1)\n", run_time_parameters={})
    assert [r.body for r in robot.requests[:2]] == [b'{"data":{"protocolId":"p1"}}'] * 2
    assert parse_multipart(robot.requests[2]) == [("files", "main.py", b"print(1)\n")]


@pytest.mark.parametrize(
    "values",
    [
        {"first_tip": float("nan")},
        {"first_tip": [1, 2]},
        {"first_tip": None},
        {"not a name": 1},
        {"first_tip": 1, 3: 1},
    ],
)
def test_bad_run_time_parameters_are_refused_before_sending(
    robot: ScriptedRobot, client: OpentronsClient, values: Any
) -> None:
    with pytest.raises(ValueError, match="ot2-a: run-time parameter"):
        client.create_run("p1", values)
    with pytest.raises(ValueError, match="ot2-a: run-time parameter"):
        client.upload_protocol("main.py", b"x", run_time_parameters=values)
    assert robot.requests == []


def test_unsafe_filename_is_refused_before_sending(
    robot: ScriptedRobot, client: OpentronsClient
) -> None:
    with pytest.raises(ProtocolRejected) as info:
        client.upload_protocol('evil".py', b"x")
    assert info.value.error_id == "InvalidFileName"
    assert robot.requests == []


def test_current_run_id(robot: ScriptedRobot, client: OpentronsClient) -> None:
    robot.expect("GET", "/runs?pageLength=1", replay("probe_list_runs"))
    robot.expect("GET", "/runs?pageLength=1", replay("probe_runs_version_star"))  # links: {}
    assert client.current_run_id() == "8910784a-9ecb-41e6-b1a0-275d3d780e4e"
    assert client.current_run_id() is None


def test_api_version_header_follows_setting(robot: ScriptedRobot, clock: VirtualClock) -> None:
    robot.expect("GET", "/health", replay("flex_ok_01_health"))
    OpentronsClient("flex-b", robot.url, clock, api_version=4).health()
    assert_common_headers(robot, version="4")


@pytest.mark.parametrize("version", ["*", 1, True, 3.0])
def test_api_version_must_be_an_integer_of_at_least_2(clock: VirtualClock, version: Any) -> None:
    with pytest.raises(ValueError, match="api_version"):
        OpentronsClient("ot2-a", "http://127.0.0.1:31950", clock, api_version=version)
