"""A scripted serial peer for driver tests: it checks every frame the driver writes.

A tiny fake device (a TCP server on 127.0.0.1 reached through ``socket://``, or a
pseudo-terminal) plays a script of (expected frame, reply) steps: any frame that differs from
the script, any missing step and any extra byte fails the test.
"""

from __future__ import annotations

import os
import select
import socket
import threading
import tty
from collections.abc import Sequence

CLOSE = b"<close>"  # script reply: the peer drops the connection instead of answering
Step = tuple[bytes, "bytes | None"]  # (expected frame, reply; None = stay silent)


class ScriptedPeer:
    """A fake device that answers a fixed script and records every byte it receives."""

    def __init__(self, script: Sequence[Step], *, frame_end: bytes = b"\r", pty: bool = False):
        self.script = list(script)
        self.frame_end = frame_end
        self.received: list[bytes] = []
        self.problems: list[str] = []
        self.extra = b""
        self.steps_done = 0
        self._stop = threading.Event()
        self._conn: socket.socket | None = None
        self._server: socket.socket | None = None
        self._fds: tuple[int, int] | None = None
        if pty:
            master, slave = os.openpty()
            tty.setraw(master)
            tty.setraw(slave)
            self._fds = (master, slave)
            self.url = os.ttyname(slave)
        else:
            self._server = socket.create_server(("127.0.0.1", 0))
            self.url = f"socket://127.0.0.1:{self._server.getsockname()[1]}"
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    @property
    def slave_fd(self) -> int:
        assert self._fds is not None
        return self._fds[1]

    # Transport primitives: wait up to `timeout` real seconds for bytes (b"" = none, None = EOF).
    def _readable(self) -> object:
        return self._conn if self._conn is not None else self._fds[0]  # type: ignore[index]

    def _recv(self, timeout: float) -> bytes | None:
        ready, _, _ = select.select([self._readable()], [], [], timeout)
        if not ready:
            return b""
        try:
            if self._conn is not None:
                data = self._conn.recv(4096)
            else:
                data = os.read(self._fds[0], 4096)  # type: ignore[index]
        except OSError:
            return None
        return data or None

    def inject(self, data: bytes) -> None:
        """Send bytes outside the script (an unsolicited or late line)."""
        self._send(data)

    def _send(self, data: bytes) -> None:
        if self._conn is not None:
            self._conn.sendall(data)
        else:
            os.write(self._fds[0], data)  # type: ignore[index]

    def _run(self) -> None:
        try:
            self._play()
        except Exception as exc:  # a crash in the peer must fail the test, not hide
            self.problems.append(f"peer crashed: {exc!r}")

    def _play(self) -> None:
        if self._server is not None:
            while not self._stop.is_set():
                ready, _, _ = select.select([self._server], [], [], 0.02)
                if ready:
                    self._conn, _ = self._server.accept()
                    break
            else:
                return
        buf = b""
        for expected, reply in self.script:
            waited = 0.0
            while self.frame_end not in buf:
                data = self._recv(0.02)
                if data is None:
                    self.problems.append(f"link closed while waiting for {expected!r}")
                    return
                if not data:
                    waited += 0.02
                    if self._stop.is_set() or waited > 5.0:
                        self.problems.append(f"never received {expected!r} (got {buf!r})")
                        return
                buf += data
            end = buf.index(self.frame_end) + len(self.frame_end)
            frame, buf = buf[:end], buf[end:]
            self.received.append(frame)
            if frame != expected:
                self.problems.append(
                    f"step {self.steps_done}: expected {expected!r}, got {frame!r}"
                )
                return
            self.steps_done += 1
            if reply == CLOSE:
                assert self._conn is not None
                self._conn.close()
                self._conn = None
                return
            if reply is not None:
                self._send(reply)
        # Script done: anything more the driver writes is a defect.
        extra = buf
        while True:
            data = self._recv(0.0 if self._stop.is_set() else 0.02)
            if data is None or (not data and self._stop.is_set()):
                break
            extra += data
        self.extra = extra

    def finish(self) -> None:
        """Stop the peer and assert the script was played exactly, with nothing extra."""
        self._stop.set()
        self._thread.join(timeout=10)
        assert not self._thread.is_alive()
        for s in (self._conn, self._server):
            if s is not None:
                s.close()
        if self._fds is not None:
            for fd in self._fds:
                os.close(fd)
        assert self.problems == []
        assert self.steps_done == len(self.script), f"unplayed: {self.script[self.steps_done :]}"
        assert self.extra == b"", f"driver wrote unexpected bytes {self.extra!r}"
