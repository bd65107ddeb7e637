"""Serve a line simulator on a pseudo-terminal or on a loopback TCP port.

A line simulator (:class:`LineDevice`) is a pure object: one request line in, one reply
line out (Opentrons' emulator pattern). This module puts it on a wire a pyserial client
opens exactly as it would open the real device:

- :class:`PtyLink`: a pseudo-terminal; ``.port`` is the slave path (e.g. ``/dev/pts/5``),
  which the client opens with the real settings (9600 8N1, or 8E1 with RTS/CTS). Given a
  ``path``, ``.port`` is that path instead: a symbolic link to the slave, as udev's
  ``/dev/serial/by-id/...`` names a USB adapter, so a simulator started again on the same
  path is reached by a client that reopens it (a restarted adapter).
- :class:`SocketLink`: a TCP server on 127.0.0.1; ``.url`` is ``socket://127.0.0.1:PORT``
  for ``serial.serial_for_url``. Several clients may connect; their lines are served one
  at a time.

Framing, both links: input is split at CR; a LF right after a CR is swallowed (so CR and
CRLF both end a line; a LF anywhere else is an ordinary character). Each reply is written
as ``reply + device.terminator``; ``None`` writes nothing. Bytes are mapped to characters
as latin-1, so junk survives the round trip unchanged. A line longer than 1024 bytes is
cut there (the device then sees a malformed line).

BREAK. A break condition cannot be seen on a Linux pty: the pty driver has no break
control, so the client's ``send_break()`` succeeds and nothing reaches the master side
(checked with TIOCPKT: only its input flush shows up). ``socket://`` drops breaks too.
Both links therefore take a NUL byte (0x00) as BREAK and call ``device.break_signal()``
(discarding any partial line): that is how a raw Linux tty (IGNBRK, BRKINT and PARMRK all
off, as pyserial sets them) presents a received break. A client that cannot send NUL
relies on the LiCONiC simulator's ``require_break=False`` (its default), which opens the
session on ``CR`` alone; tests may also call ``break_signal()`` on the simulator directly.

Threads: each link runs one (non-daemon) reader thread (plus one per TCP client); stop()
wakes them through a pipe and joins them, so nothing dangles. A simulator exception is
logged and kept in ``.failures``; the link keeps serving.
"""

from __future__ import annotations

import functools
import logging
import os
import select
import socket
import threading
import tty
from collections.abc import Callable
from types import TracebackType
from typing import Protocol, runtime_checkable

__all__ = ["LineDevice", "LineFramer", "PtyLink", "SocketLink", "BREAK"]

log = logging.getLogger(__name__)

BREAK = object()
"""Event yielded by :class:`LineFramer` for a received BREAK (a NUL byte)."""

_MAX_LINE = 1024


@runtime_checkable
class LineDevice(Protocol):
    """The device side of a line protocol, as the links drive it."""

    @property
    def terminator(self) -> bytes:
        """Bytes written after every reply (e.g. ``b"\\r"`` or ``b"\\r\\n"``)."""
        ...

    def handle_line(self, line: str) -> str | None:
        """Reply (without terminator) to one request line (without terminator); None: silent."""
        ...

    def break_signal(self) -> None:
        """A BREAK condition was received."""
        ...


class LineFramer:
    """Splits a byte stream into lines at CR (CRLF too) and BREAK events at NUL."""

    def __init__(self) -> None:
        self._buf = bytearray()
        self._after_cr = False

    def feed(self, data: bytes) -> list[bytes | object]:
        """Events completed by ``data``: each a line (bytes, no terminator) or :data:`BREAK`."""
        events: list[bytes | object] = []
        for b in data:
            if self._after_cr and b == 0x0A:
                self._after_cr = False
                continue
            self._after_cr = False
            if b == 0x0D:
                events.append(bytes(self._buf))
                self._buf.clear()
                self._after_cr = True
            elif b == 0x00:
                self._buf.clear()
                events.append(BREAK)
            elif len(self._buf) < _MAX_LINE:
                self._buf.append(b)
        return events


class _Server:
    """Runs a device behind one lock and records its failures (shared by both links)."""

    def __init__(self, device: LineDevice) -> None:
        if not isinstance(device, LineDevice):
            raise TypeError("a link serves an object with handle_line, break_signal, terminator")
        self.device = device
        self.failures: list[BaseException] = []
        self._lock = threading.Lock()
        self._wake_r, self._wake_w = os.pipe()
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def serve(self, framer: LineFramer, data: bytes, write: Callable[[bytes], None]) -> None:
        for event in framer.feed(data):
            with self._lock:
                try:
                    if event is BREAK:
                        self.device.break_signal()
                        continue
                    assert isinstance(event, bytes)
                    reply = self.device.handle_line(event.decode("latin-1"))
                except Exception as exc:  # keep serving; the failure is kept for the test
                    log.exception("simulator failed on %r", event)
                    self.failures.append(exc)
                    continue
            if reply is not None:
                write(reply.encode("latin-1") + self.device.terminator)

    def wait_readable(self, fd: int) -> bool:
        """Block until ``fd`` is readable (True) or stop() was called (False)."""
        readable, _, _ = select.select([fd, self._wake_r], [], [])
        return self._wake_r not in readable

    def spawn(self, target: Callable[[], None], name: str) -> None:
        t = threading.Thread(target=target, name=name)
        self._threads.append(t)
        t.start()

    def shutdown(self) -> None:
        if self._stopping:
            return
        self._stopping = True
        os.write(self._wake_w, b"x")
        # Threads may spawn connection threads until they see the wake-up: join until none
        # is left.
        while self._threads:
            self._threads.pop(0).join()
        os.close(self._wake_r)
        os.close(self._wake_w)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


class PtyLink:
    """A pseudo-terminal whose far end behaves like the device (Linux/macOS only).

    Usage::

        with PtyLink(sim) as link:
            port = serial.serial_for_url(link.port, baudrate=9600, timeout=2)

    The slave stays open on this side too for the link's lifetime, so clients may open
    and close it repeatedly without the master seeing a hang-up.
    """

    def __init__(self, device: LineDevice, *, path: str | os.PathLike[str] | None = None) -> None:
        self._server = _Server(device)
        self._master: int | None = None
        self._slave: int | None = None
        self._path = None if path is None else os.fspath(path)
        self.port = ""

    @property
    def failures(self) -> list[BaseException]:
        """Exceptions the simulator raised while serving (empty when all went well)."""
        return self._server.failures

    def start(self) -> PtyLink:
        """Open the pty and start serving; ``.port`` is then the path to open."""
        if self._master is not None:
            return self
        master, slave = os.openpty()
        tty.setraw(master)
        tty.setraw(slave)
        self._master, self._slave = master, slave
        self.port = os.ttyname(slave)
        if self._path is not None:
            # Point the stable name at this pty in one step (replacing an older link).
            staging = f"{self._path}.{os.getpid()}.new"
            os.symlink(self.port, staging)
            os.replace(staging, self._path)
            self.port = self._path
        self._server.spawn(self._run, f"pty-link {self.port}")
        return self

    def _run(self) -> None:
        assert self._master is not None
        framer = LineFramer()
        master = self._master
        while self._server.wait_readable(master):
            try:
                data = os.read(master, 4096)
            except OSError:  # EIO: no slave open (cannot happen while we hold one)
                break
            self._server.serve(framer, data, lambda out: _write_all(master, out))

    def stop(self) -> None:
        """Stop serving, join the thread and close the pty (idempotent); a ``path`` link to
        it is removed, as the device's name goes when its adapter does."""
        self._server.shutdown()
        slave_name = os.ttyname(self._slave) if self._slave is not None else None
        for fd in (self._master, self._slave):
            if fd is not None:
                os.close(fd)
        self._master = self._slave = None
        if self._path is not None and slave_name is not None:
            try:
                if os.readlink(self._path) == slave_name:
                    os.unlink(self._path)
            except OSError:
                pass  # already gone, or taken over by a newer link

    def __enter__(self) -> PtyLink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


class SocketLink:
    """A TCP server on 127.0.0.1 serving the device to ``socket://`` clients.

    ``port=0`` picks a free port; ``.url`` is the pyserial URL after start().
    """

    def __init__(self, device: LineDevice, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self._server = _Server(device)
        self._host = host
        self._port = port
        self._listener: socket.socket | None = None

    @property
    def failures(self) -> list[BaseException]:
        """Exceptions the simulator raised while serving (empty when all went well)."""
        return self._server.failures

    @property
    def port(self) -> int:
        """The TCP port (known after start())."""
        return self._port

    @property
    def url(self) -> str:
        """The pyserial URL, e.g. ``socket://127.0.0.1:50123``."""
        return f"socket://{self._host}:{self._port}"

    def start(self) -> SocketLink:
        """Listen and start accepting clients."""
        if self._listener is not None:
            return self
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((self._host, self._port))
        listener.listen()
        self._listener = listener
        self._port = listener.getsockname()[1]
        self._server.spawn(self._accept_loop, f"socket-link {self._port}")
        return self

    def _accept_loop(self) -> None:
        assert self._listener is not None
        while self._server.wait_readable(self._listener.fileno()):
            conn, _ = self._listener.accept()
            # Replies are small and request/response: send each at once.
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            self._server.spawn(
                functools.partial(self._serve_conn, conn), f"socket-conn {self._port}"
            )

    def _serve_conn(self, conn: socket.socket) -> None:
        framer = LineFramer()
        try:
            while self._server.wait_readable(conn.fileno()):
                data = conn.recv(4096)
                if not data:
                    break
                self._server.serve(framer, data, conn.sendall)
        except OSError:  # the client went away mid-reply
            pass
        finally:
            conn.close()

    def stop(self) -> None:
        """Stop accepting, disconnect clients, join every thread (idempotent)."""
        self._server.shutdown()
        if self._listener is not None:
            self._listener.close()
            self._listener = None

    def __enter__(self) -> SocketLink:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
