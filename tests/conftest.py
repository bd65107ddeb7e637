"""Test-wide settings: no window system, and opentrons writes its config to a temp dir."""

from __future__ import annotations

import os
import tempfile
import threading
from collections.abc import Iterator
from typing import Any

# Set before anything imports Qt or opentrons (pytest imports conftest first).
os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
os.environ.setdefault("OT_API_CONFIG_DIR", tempfile.mkdtemp(prefix="labctl-ot-config-"))


import pytest  # noqa: E402 - after the environment is set

# Modules whose tests talk to a simulated robot (HTTP clients with short time-outs).
_ROBOT_MODULES = {
    "test_opentrons_end_to_end",
    "test_opentrons_lh",
    "test_opentrons_protocol",
    "test_registry",
    "test_sim_opentrons_robot",
    "test_simulate",
    "test_simulate_faults",
}
_ready: list[bool] = []


@pytest.fixture(autouse=True)
def _opentrons_ready(request: pytest.FixtureRequest) -> None:
    """Start the robot simulator's analysis processes before the first test that needs them.

    They import opentrons (~2 s) when they start; a test whose client gives up after a
    couple of seconds must not be the one that waits for that.
    """
    if _ready or request.module.__name__.rsplit(".", 1)[-1] not in _ROBOT_MODULES:
        return
    from labctl.simulators.opentrons_analysis import warm_up

    warm_up()
    _ready.append(True)


@pytest.fixture(scope="session", autouse=True)
def _analysis_service_closed() -> Iterator[None]:
    """The robot simulator's analysis service (processes, threads) ends with the session."""
    yield
    from labctl.simulators.opentrons_analysis import close_default_analysis

    close_default_analysis()


@pytest.fixture(autouse=True)
def _cheap_password_hashes(monkeypatch: pytest.MonkeyPatch) -> None:
    """Passwords hashed with scrypt N=2**10 in tests (16 times cheaper than the product's
    2**14): the cost is stored with each hash, so checking still reads it from there."""
    import labctl.accounts

    monkeypatch.setattr(labctl.accounts, "_SCRYPT_N", 2**10)


# --- a local mail server and webhook receiver (tests/test_paging.py's), for the paging,
# all-clear and watchdog tests -----------------------------------------------------------------


def _serving(srv: Any) -> Iterator[Any]:
    t = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    t.start()
    yield srv
    release = getattr(srv, "release", None)
    if release is not None:
        release.set()  # a delivery the test held back goes on, so the server can stop
    srv.shutdown()
    srv.server_close()


@pytest.fixture
def smtp() -> Iterator[Any]:
    """An SMTP server on 127.0.0.1 that keeps what it was sent (test_paging.SmtpServer)."""
    from tests.test_paging import SmtpServer

    yield from _serving(SmtpServer())


@pytest.fixture
def hook() -> Iterator[Any]:
    """An HTTP receiver on 127.0.0.1 that keeps what it was posted (test_paging.HookServer)."""
    from tests.test_paging import HookServer

    yield from _serving(HookServer())
