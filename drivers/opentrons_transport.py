"""HTTP transport to an Opentrons robot-server: one request, one JSON reply, typed errors.

:class:`RobotTransport` sends a request with the headers every request needs
(``Opentrons-Version: <api_version>``: the robot answers 422 without it, even on
``/health``) and returns the parsed JSON of a 2xx reply. Anything else is raised as a
labctl :class:`~labctl.errors.DeviceError` naming the device and the request: no reply or
a dropped connection (DeviceTimeout, DeviceCommunicationError), and 4xx/5xx replies mapped
by their error ids (DEVICES.md 1.2 and 1.3): another run holds the robot (DeviceBusy),
door or emergency stop (DeviceNeedsOperator), protocol files refused
(:class:`ProtocolRejected`), a request the robot did not understand
(DeviceCommunicationError), a run the robot does not know (404 ``RunNotFound``: it was
restarted or reset and forgot it; OperationLost), any other 404 (:class:`NotFound`: an
unknown id, or a route this robot-server does not serve). ``device_code`` is the robot's
``errorCode``. :attr:`RobotTransport.link_losses` counts the requests the link failed on, so
a caller can tell that the robot may have been restarted since it last read something.

GETs reuse one kept-alive connection, and a GET whose kept-alive connection had gone stale
is sent once more on a new one; any other request gets a fresh connection and is never
sent twice: whether a repeated POST is safe is the engine's decision. Thread-safe: the
kept-alive connection is handed out to one request at a time.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import socket
import threading
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import urlencode, urlsplit

from labctl.errors import (
    DeviceBusy,
    DeviceCommunicationError,
    DeviceError,
    DeviceFault,
    DeviceNeedsOperator,
    DeviceTimeout,
    DeviceUnreachable,
    OperationLost,
)

__all__ = [
    "DEFAULT_PORT",
    "NotFound",
    "ProtocolRejected",
    "RobotTransport",
    "compact_json",
    "multipart",
]

DEFAULT_PORT = 31950

# 409 ids meaning "another run holds the robot" (DEVICES.md 1.3).
_BUSY_IDS = frozenset({"RunNotIdle", "ProtocolUsedByRun", "ProtocolRunIsActive"})
# 422 ids meaning "these protocol files will not run on this robot".
_REJECTED_IDS = frozenset({"ProtocolFilesInvalid", "ProtocolRobotTypeMismatch"})


class ProtocolRejected(DeviceFault):
    """The robot refused the protocol files (422 ``ProtocolFilesInvalid`` or
    ``ProtocolRobotTypeMismatch``), or the client refused a file name it cannot send.

    ``error_id`` is the robot's ``errors[0].id``.
    """

    def __init__(
        self,
        device: str,
        command: str,
        message: str,
        *,
        device_code: str | None = None,
        error_id: str = "",
    ) -> None:
        super().__init__(device, command, message, device_code=device_code)
        self.error_id = error_id


class NotFound(DeviceFault):
    """404 other than ``RunNotFound``: the robot has no such resource, or does not serve the
    route at all (robot-server answers an unknown route with 404 ``BadRequest`` "Not Found",
    robot-server/robot_server/errors/exception_handlers.py): an older robot software may lack
    an endpoint a newer one has."""


class RobotTransport:
    """Requests to the robot-server at ``base_url`` (``http[s]://host[:port][/prefix]``,
    port 31950 if none is given), checked by the caller.

    ``timeout_s`` bounds each socket operation of a request (seconds); ``api_version`` is
    the ``Opentrons-Version`` header's value.
    """

    def __init__(self, name: str, base_url: str, *, api_version: int, timeout_s: float) -> None:
        parts = urlsplit(base_url)
        self.name = name
        self.api_version = api_version
        self.timeout_s = timeout_s
        self._https = parts.scheme == "https"
        self._conn: http.client.HTTPConnection | None = None  # kept alive between GETs
        self._conn_lock = threading.Lock()
        self._host = parts.hostname or ""
        self._port = parts.port or DEFAULT_PORT
        self._prefix = parts.path.rstrip("/")
        self._losses = 0  # requests the link failed on (see link_losses)

    def request(
        self,
        method: str,
        path: str,
        *,
        query: Mapping[str, object] | None = None,
        json_body: object = None,
        body: bytes | None = None,
        content_type: str | None = None,
    ) -> tuple[int, Any]:
        """Send one request; return (HTTP status, parsed JSON) of a 2xx reply, else raise."""
        command = f"{method} {path}"
        target = self._prefix + path + (f"?{urlencode(query)}" if query else "")
        headers = {"Opentrons-Version": str(self.api_version), "Accept": "application/json"}
        if json_body is not None:
            body = compact_json(json_body)
            content_type = "application/json"
        if content_type is not None:
            headers["Content-Type"] = content_type
        status, raw = self._exchange(method, command, target, body, headers)
        if not 200 <= status < 300:
            raise _http_error(self.name, command, status, raw)
        try:
            return status, json.loads(raw)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise DeviceCommunicationError(
                self.name, command, f"reply is not JSON (HTTP {status}): {_snippet(raw)}"
            ) from exc

    @property
    def kept_connection(self) -> http.client.HTTPConnection | None:
        """The connection kept alive for the next GET, if any."""
        return self._conn

    @property
    def link_losses(self) -> int:
        """How many requests failed for want of a link (refused, timed out, dropped, broken):
        when it grew, the robot may have been restarted since (a kept-alive connection the
        robot had closed while idle and that a resent GET replaced is not counted)."""
        with self._conn_lock:
            return self._losses

    def close(self) -> None:
        """Close the kept-alive connection (a later request opens a new one)."""
        with self._conn_lock:
            conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()

    def _exchange(
        self,
        method: str,
        command: str,
        target: str,
        body: bytes | None,
        headers: dict[str, str],
    ) -> tuple[int, bytes]:
        """(status, raw body) of one request; no reply or a broken link raises a DeviceError
        (and counts in :attr:`link_losses`)."""
        reuse = method == "GET"
        try:
            return self._send_once(method, target, body, headers)
        except (OSError, http.client.HTTPException) as exc:  # TimeoutError is an OSError
            with self._conn_lock:
                self._losses += 1
            raise self._link_error(command, exc, reuse=reuse) from exc

    def _link_error(self, command: str, exc: Exception, *, reuse: bool) -> DeviceError:
        """The typed error for a request the link failed on."""
        if isinstance(exc, TimeoutError):
            return DeviceTimeout(
                self.name, command, f"robot offline: no reply within {self.timeout_s:g} s"
            )
        if isinstance(exc, ConnectionRefusedError):
            return DeviceUnreachable(self.name, command, "robot offline: connection refused")
        if isinstance(exc, (ConnectionError, http.client.RemoteDisconnected)):
            # A request that changes something may have been acted on before the link
            # broke: only a read is known to have done nothing.
            error = DeviceUnreachable if reuse else DeviceCommunicationError
            return error(self.name, command, "robot offline: connection closed by the robot")
        if isinstance(exc, http.client.HTTPException):
            return DeviceCommunicationError(
                self.name, command, f"garbled HTTP reply ({type(exc).__name__})"
            )
        assert isinstance(exc, OSError)
        return DeviceCommunicationError(self.name, command, f"robot offline: {exc.strerror or exc}")

    def _send_once(
        self, method: str, target: str, body: bytes | None, headers: dict[str, str]
    ) -> tuple[int, bytes]:
        """(status, raw body) of one request; the link's own exceptions pass through."""
        conn_cls = http.client.HTTPSConnection if self._https else http.client.HTTPConnection
        # GETs reuse one kept-alive connection (polls are most of the traffic); a request
        # that changes something always gets a fresh one and is never sent twice.
        reuse = method == "GET"
        conn = None
        if reuse:
            with self._conn_lock:
                conn, self._conn = self._conn, None
        fresh = conn is None
        if conn is None:
            conn = conn_cls(self._host, self._port, timeout=self.timeout_s)
        keep = False
        try:
            try:
                _send(conn, method, target, body, headers)
                resp = conn.getresponse()
            except (http.client.RemoteDisconnected, BrokenPipeError, ConnectionResetError):
                if fresh:
                    raise
                # The kept-alive connection had gone stale: a GET may simply be sent again.
                conn.close()
                conn = conn_cls(self._host, self._port, timeout=self.timeout_s)
                _send(conn, method, target, body, headers)
                resp = conn.getresponse()
            status = resp.status
            raw = resp.read()
            keep = reuse and not resp.will_close
        finally:
            if keep:
                with self._conn_lock:
                    if self._conn is None:
                        self._conn, conn = conn, None
            if conn is not None:
                conn.close()
        return status, raw


def _http_error(name: str, command: str, status: int, raw: bytes) -> DeviceError:
    """The typed error for a 4xx/5xx reply (DEVICES.md 1.2 error bodies)."""
    error_id, detail, code = _error_fields(raw)
    if not detail:
        detail = f"HTTP {status}: {_snippet(raw)}" if raw.strip() else f"HTTP {status}"
    described = f"{error_id}: {detail}" if error_id else detail
    if status == 404 and error_id == "RunNotFound":
        # Not "unreachable, ask again": the robot answered, and it has no such run.
        return OperationLost(name, command, described, device_code=code)
    if status == 404:
        # An unknown id, or a route this robot software does not serve (an older one).
        return NotFound(name, command, described, device_code=code)
    if status == 409 and error_id == "RunAlreadyActive":
        return DeviceBusy(name, command, "robot busy with another run", device_code=code)
    if status == 409 and error_id in _BUSY_IDS:
        return DeviceBusy(name, command, described, device_code=code)
    if status == 409 and "door" in detail.lower():
        # Flex: play refused while the door is open; a person has to close it.
        return DeviceNeedsOperator(name, command, described, device_code=code)
    if status == 403 and (error_id or "").startswith("Estop"):
        message = f"emergency stop: {described}"
        return DeviceNeedsOperator(name, command, message, device_code=code)
    if status == 422 and error_id in _REJECTED_IDS:
        message = f"protocol rejected: {described}"
        return ProtocolRejected(name, command, message, device_code=code, error_id=error_id or "")
    if status in (400, 422):
        # The robot did not understand the request (version, envelope): a wire mismatch.
        message = f"request refused: {described}"
        return DeviceCommunicationError(name, command, message, device_code=code)
    if status == 503:
        message = f"robot not ready: {described}"
        return DeviceBusy(name, command, message, device_code=code)
    return DeviceFault(name, command, described, device_code=code)


def _snippet(raw: bytes, limit: int = 80) -> str:
    text = raw[:limit].decode("utf-8", "replace")
    return repr(text) + ("..." if len(raw) > limit else "")


def _error_fields(raw: bytes) -> tuple[str | None, str, str | None]:
    """(errors[0].id, detail, errorCode) of an error body; empty when it has none.

    Understands ``{"errors": [{id, title, detail, errorCode}]}`` and /health's
    ``{"message", "errorCode"}``.
    """
    try:
        body = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        return None, "", None
    if not isinstance(body, dict):
        return None, "", None
    first: Mapping[str, Any] = body
    errors = body.get("errors")
    if isinstance(errors, list) and errors and isinstance(errors[0], dict):
        first = errors[0]
    error_id = first.get("id")
    detail = first.get("detail") or first.get("message") or first.get("title") or ""
    code = first.get("errorCode")
    return (
        error_id if isinstance(error_id, str) else None,
        detail if isinstance(detail, str) else str(detail),
        str(code) if isinstance(code, (str, int)) and not isinstance(code, bool) else None,
    )


def _content_type_for(filename: str) -> str:
    if filename.lower().endswith(".json"):
        return "application/json"
    if filename.lower().endswith(".py"):
        return "text/x-python"
    return "application/octet-stream"


def compact_json(value: object) -> bytes:
    """Compact JSON, as the client sends it."""
    return json.dumps(value, separators=(",", ":")).encode()


def multipart(
    files: Iterable[tuple[str, bytes]], fields: Iterable[tuple[str, bytes]] = ()
) -> tuple[bytes, str]:
    """multipart/form-data with one part named ``files`` per file, then one text part per
    form field (name, value).

    The boundary is derived from the files (not random) so the same upload is the same
    bytes, and it is checked not to occur inside any file or field.
    """
    files = list(files)
    fields = list(fields)
    digest = hashlib.sha256()
    for name, content in files:
        digest.update(name.encode() + b"\0" + content + b"\0")
    parts = [content for _, content in files] + [value for _, value in fields]
    salt = 0
    while True:
        boundary = f"labctl-{digest.hexdigest()[:32]}{salt or ''}"
        if not any(boundary.encode() in content for content in parts):
            break
        salt += 1
    out = bytearray()
    for name, content in files:
        out += f"--{boundary}\r\n".encode()
        out += f'Content-Disposition: form-data; name="files"; filename="{name}"\r\n'.encode()
        out += f"Content-Type: {_content_type_for(name)}\r\n\r\n".encode()
        out += content + b"\r\n"
    for name, value in fields:
        out += f"--{boundary}\r\n".encode()
        out += f'Content-Disposition: form-data; name="{name}"\r\n\r\n'.encode()
        out += value + b"\r\n"
    out += f"--{boundary}--\r\n".encode()
    return bytes(out), f"multipart/form-data; boundary={boundary}"


def _send(
    conn: http.client.HTTPConnection,
    method: str,
    target: str,
    body: bytes | None,
    headers: dict[str, str],
) -> None:
    """Send one request with Nagle off (small requests on a kept-alive connection)."""
    if conn.sock is None:
        conn.connect()
        _no_delay(conn)
    conn.request(method, target, body=body, headers=headers)


def _no_delay(conn: http.client.HTTPConnection) -> None:
    try:
        conn.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    except (OSError, AttributeError):
        pass  # not a TCP socket (tests may hand in others): Nagle then stays on
