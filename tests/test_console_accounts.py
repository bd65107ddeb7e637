"""The console with user accounts (pytest-qt, offscreen): sign-in, roles, the developer's
own runs, electronic signatures, the inactivity lock, and databases without accounts.

The world is tests/console_fixtures.py's simulated Kriks run (registered by alice) with the
accounts of ``USERS``: alice (supervisor), olga (operator), dan (developer), ada (admin).
Passwords are checked by the store (scrypt, ~70 ms each) on the console's worker thread.
"""

from __future__ import annotations

import shutil
from datetime import timedelta

import pytest
from console_fixtures import (
    DAY0,
    KRIKS,
    TZ,
    WALL_START,
    Sim,
    World,
    accounts_world,
    copy_world,
    fast_dir,
    make_practice,
    open_sim,
    password,
    shared_world,
    sign_in_window,
)
from PyQt6.QtCore import QEvent, QPoint, Qt
from PyQt6.QtWidgets import QApplication, QWidget

from labctl.accounts import LOCK_AFTER, Action, PermissionDenied
from labctl.clock import VirtualClock
from labctl.engine import register_run
from labctl.gui import models as m
from labctl.gui import theme
from labctl.gui.access import ConsoleAccess
from labctl.gui.auth import authorize, login_name
from labctl.gui.main_window import MainWindow
from labctl.jobs import WorkcellRoles
from labctl.plan.resolve import resolve
from labctl.store.users import subject_sha256
from labctl.validate import load_protocol


@pytest.fixture(scope="module")
def world() -> World:
    return accounts_world()


def _sim(world: World, *, practice: bool = False) -> Sim:
    copy = copy_world(world, fast_dir("labctl-console-accounts-test-") / "copy")
    if practice:
        make_practice(copy.db)
    return open_sim(copy)


@pytest.fixture
def sim(world: World) -> Sim:
    s = _sim(world)
    yield s
    s.close()
    shutil.rmtree(s.world.db.parent.parent, ignore_errors=True)


@pytest.fixture
def wall() -> VirtualClock:
    return VirtualClock(WALL_START)


@pytest.fixture
def open_window(qtbot, wall: VirtualClock):  # noqa: ANN001, ANN201 - pytest-qt's fixture
    """Opens console windows (closed after the test): ``open_window(sim, **kw)``."""
    theme.apply(QApplication.instance())  # type: ignore[arg-type]
    wins: list[MainWindow] = []

    def make(sim: Sim, **kw: object) -> MainWindow:
        w = MainWindow(sim.world.db, sim.clock, wall=wall, poll_ms=50, **kw)  # type: ignore[arg-type]
        qtbot.addWidget(w)
        w.resize(1400, 900)
        w.show()
        wins.append(w)
        return w

    yield make
    for w in wins:
        w.close()
        assert w.bridge._thread.isFinished()


def press(qtbot, widget: QWidget) -> None:  # noqa: ANN001
    """A key pressed on ``widget``'s window, delivered as the platform delivers it (through
    the window's QWindow, which is where the console watches for input)."""
    handle = widget.window().windowHandle()
    assert handle is not None, "the window is not shown"
    qtbot.keyClick(handle, Qt.Key.Key_Shift)


def signed_in(qtbot, open_window, sim: Sim, name: str, **kw: object) -> MainWindow:  # noqa: ANN001
    w = open_window(sim, **kw)
    sign_in_window(qtbot, w, name)
    qtbot.waitUntil(lambda: w.snapshot is not None, timeout=10_000)
    return w


def wait_for_command(qtbot, sim: Sim, verb: str) -> m.Command:  # noqa: ANN001
    qtbot.waitUntil(
        lambda: any(c.verb == verb for c in sim.store.pending_commands()), timeout=10_000
    )
    (cmd,) = [c for c in sim.store.pending_commands() if c.verb == verb]
    return cmd


# --- signing in ------------------------------------------------------------------------------


def test_sign_in_then_the_window_shows_who(qtbot, open_window, sim: Sim) -> None:  # noqa: ANN001
    w = open_window(sim)
    qtbot.waitUntil(lambda: w.access.sign_in_dialog is not None, timeout=10_000)
    # Nothing is read before someone signs in, and the window is covered.
    assert w.access.lock_screen.isVisible() and w.access.covered
    assert not w.poller.active and w.snapshot is None
    assert not w.menu_actions["pause"].isEnabled()
    assert w.status_bar.actor.text() == "nobody signed in"
    sign_in_window(qtbot, w, "alice")
    qtbot.waitUntil(lambda: w.snapshot is not None, timeout=10_000)
    assert not w.access.lock_screen.isVisible() and not w.access.dialogs_hidden()
    assert w.status_bar.actor.text() == "signed in: Alice Lind (alice) · supervisor"
    assert w.actor == "alice"
    (ev,) = sim.store.events(entity="session", action="signed-in")
    assert (ev.actor, ev.data) == ("alice", {"user": "alice", "client": "console"})
    assert w.strip.abort.isEnabled() and w.menu_actions["pause"].isEnabled()
    w.close()  # closing the console ends its session
    (out,) = sim.store.events(entity="session", action="signed-out")
    assert (out.actor, out.entity_id) == ("alice", ev.entity_id)


def test_a_wrong_password_or_name_says_the_same_and_locks_out(qtbot, open_window, sim: Sim) -> None:  # noqa: ANN001
    w = open_window(sim)
    qtbot.waitUntil(lambda: w.access.sign_in_dialog is not None, timeout=10_000)
    dlg = w.access.sign_in_dialog

    def attempt(name: str, pw: str) -> str:
        dlg.name.setText(name)
        dlg.password.setText(pw)
        dlg.sign_in_button.click()
        qtbot.waitUntil(lambda: dlg.sign_in_button.isEnabled(), timeout=10_000)
        return dlg.error.text()

    # The same words for an unknown user and a wrong password: nothing tells them apart.
    assert attempt("mallory", "whatever it is") == "✕ wrong user name or password"
    for _ in range(LOCK_AFTER - 1):
        assert attempt("olga", "not her password") == "✕ wrong user name or password"
    assert dlg.password.text() == ""  # cleared after each refusal
    assert attempt("olga", "not her password") == (
        "✕ wrong user name or password; the account 'olga' is now locked for 15 minutes"
    )
    # Locked: even the right password is refused until the lock ends (or an admin lifts it).
    assert "is locked after 5 wrong passwords" in attempt("olga", password("olga"))
    assert w.access.user is None and w.snapshot is None and dlg.isVisible()
    assert sim.store.get_user("olga").locked_until is not None
    assert [e.action for e in sim.store.events(entity="user", action="locked")] == ["locked"]
    # Escape does not dismiss it; Quit closes the console.
    qtbot.keyClick(dlg, Qt.Key.Key_Escape)
    assert dlg.isVisible()
    dlg.quit_button.click()
    qtbot.waitUntil(lambda: not w.isVisible(), timeout=10_000)


# --- roles --------------------------------------------------------------------------------------


def _hold_the_run(sim: Sim) -> None:
    (p,) = [x for x in sim.store.open_prompts() if x.kind == "recovery"]
    sim.store.insert_command(
        "answer", actor="bob", run_id=p.run_id, args={"prompt": p.id, "answer": {"choice": "hold"}}
    )
    sim.engine.step()
    assert sim.store.get_run(sim.world.run_id).state == "holding"


def test_an_operator_cannot_release_a_hold(qtbot, open_window, sim: Sim) -> None:  # noqa: ANN001
    _hold_the_run(sim)
    w = signed_in(qtbot, open_window, sim, "olga")
    assert w.status_bar.actor.text() == "signed in: Olga Berg (olga) · operator"
    qtbot.waitUntil(lambda: w.strip.release.isVisible(), timeout=10_000)
    why = "Not allowed: an operator may not release (only: supervisor)"
    assert not w.strip.release.isEnabled() and w.strip.release.toolTip() == why
    assert not w.menu_actions["release"].isEnabled()
    assert w.menu_actions["release"].toolTip() == why
    assert w.strip.abort.isEnabled()  # operators may abort (signed)
    # Attempted anyway (a shortcut, a script): refused with the reason, nothing written.
    assert w.control("release") is None
    assert w.messages[-1] == "✕ not allowed: an operator may not release (only: supervisor)"
    refused: list[str] = []

    class Dialog:
        def failed(self, message: str) -> None:
            refused.append(message)

    w.commands.send([m.release(sim.world.run_id, "QC reviewed")], Dialog())
    assert refused == ["not allowed: an operator may not release (only: supervisor)"]
    # A decision prompt (as a QC hold opens): 'release' is disabled with the reason.
    p = sim.store.insert_prompt(
        sim.world.run_id, kind="decision", text="QC FOXA2 58 % outside its limits: release or "
        "abort", actor="engine", choices=["release", "abort"],
    )  # fmt: skip
    qtbot.waitUntil(lambda: any(x.id == p.id for x in w.snapshot.prompts), timeout=10_000)
    dlg = w.open_prompt(p.id)
    assert not dlg.choice_buttons["release"].isEnabled()
    assert dlg.choice_buttons["release"].toolTip() == why
    assert dlg.choice_buttons["abort"].isEnabled()
    dlg.later_button.click()
    # The store refuses too, whatever the window says.
    olga = w.access.user
    with pytest.raises(PermissionDenied, match="an operator may not release"):
        m.submit(sim.store, m.release(sim.world.run_id, "x"), who=olga, now=WALL_START)
    assert sim.store.pending_commands() == []


def test_an_admin_manages_accounts_and_acts_on_no_run(qtbot, open_window, sim: Sim) -> None:  # noqa: ANN001
    w = signed_in(qtbot, open_window, sim, "ada")
    for verb in ("pause", "skip", "abort"):
        assert not getattr(w.strip, verb).isEnabled()
        assert getattr(w.strip, verb).toolTip().startswith(f"Not allowed: an admin may not {verb}")
    assert not w.menu_actions["new"].isEnabled() and not w.runs_view.new_button.isEnabled()
    assert w.new_run() is None
    # Viewing is everyone's: the runs are shown.
    assert w.snapshot.runs[0].name == "Kriks DA batch 2x6w"


def _register(sim: Sim, actor: str) -> int:
    proto = load_protocol(KRIKS)
    plan = resolve(proto, {}, plates=1, start=DAY0 + timedelta(days=30), timezone=TZ)
    return register_run(
        sim.store, sim.clock, proto, plan, WorkcellRoles.simulated(["P1"]),
        name="Dan's test run", workcell_name="simulated", workcell_text="", actor=actor,
    )  # fmt: skip


def test_a_developer_acts_only_on_runs_they_registered(qtbot, open_window, sim: Sim) -> None:  # noqa: ANN001
    own = _register(sim, "dan")
    w = signed_in(qtbot, open_window, sim, "dan")
    w.set_run(sim.world.run_id)  # alice's run
    why = "Not allowed: a developer may abort only on runs they registered"
    assert not w.strip.abort.isEnabled() and w.strip.abort.toolTip() == why
    assert not w.strip.pause.isEnabled()
    assert w.control("abort") is None
    w.set_run(own)
    assert w.snapshot.run(own).registered_by == "dan"
    assert w.strip.abort.isEnabled() and not w.strip.abort.toolTip().startswith("Not allowed")
    dan = w.access.user
    with pytest.raises(PermissionDenied, match="only on runs they registered"):
        authorize(sim.store, dan, Action.ABORT, sim.world.run_id, now=WALL_START)
    assert authorize(sim.store, dan, Action.ABORT, own, now=WALL_START).name == "dan"
    # Dan's own run is his to abort (signed), from the window.
    dlg = w.control("abort")
    dlg.reason.setText("test run done with")
    dlg.ok_button.click()
    sig = _signature(qtbot, w)
    sig.password.setText(password("dan"))
    sig.sign_button.click()
    cmd = wait_for_command(qtbot, sim, "abort")
    assert (cmd.run_id, cmd.actor) == (own, "dan")


# --- signatures ---------------------------------------------------------------------------------


def _signature(qtbot, w: MainWindow):  # noqa: ANN001, ANN202
    qtbot.waitUntil(
        lambda: w.commands.last_signature is not None and w.commands.last_signature.isVisible(),
        timeout=10_000,
    )
    return w.commands.last_signature


def test_a_signed_abort_carries_its_signature(qtbot, open_window, sim: Sim) -> None:  # noqa: ANN001
    w = signed_in(qtbot, open_window, sim, "alice")
    rid = sim.world.run_id
    dlg = w.control("abort")
    dlg.reason.setText("mycoplasma positive")
    dlg.ok_button.click()
    sig = _signature(qtbot, w)
    assert sig.what.text() == f"<b>abort run {rid}</b>"
    assert sig.reason.text() == "mycoplasma positive"
    assert sig.chosen_meaning().value == "performed"  # SIGNED's default for abort
    sig.meaning.setCurrentIndex(1)
    assert sig.chosen_meaning().value == "reviewed"
    sig.password.setText(password("alice"))
    sig.sign_button.click()
    cmd = wait_for_command(qtbot, sim, "abort")
    (s,) = sim.store.signatures(rid)
    run = sim.store.get_run(rid)
    subject = {
        "action": "abort",
        "run": rid,
        "protocol_sha256": run.protocol_sha256,
        "args": {},
        "reason": "mycoplasma positive",
    }
    assert s.subject == subject and s.subject_sha256 == subject_sha256(subject)[1]
    assert (s.user_name, s.full_name, s.meaning.value, s.action) == (
        "alice", "Alice Lind", "reviewed", "abort",
    )  # fmt: skip
    assert cmd.args == {"signature": s.id}
    assert (cmd.actor, cmd.reason) == ("alice", "mycoplasma positive")
    qtbot.waitUntil(lambda: not sig.isVisible() and dlg.has_sent, timeout=10_000)
    sim.engine.step()
    assert sim.store.get_run(rid).state == "aborted"


def test_a_wrong_password_never_signs(qtbot, open_window, sim: Sim) -> None:  # noqa: ANN001
    w = signed_in(qtbot, open_window, sim, "olga")
    dlg = w.control("abort")
    dlg.reason.setText("contaminated")
    dlg.ok_button.click()
    sig = _signature(qtbot, w)
    sig.password.setText(password("alice"))  # another user's password is as wrong
    sig.sign_button.click()
    qtbot.waitUntil(lambda: sig.sign_button.isEnabled(), timeout=10_000)
    assert sig.error.text() == "✕ not signed: wrong user name or password"
    assert sim.store.signatures() == [] and sim.store.pending_commands() == []
    assert sim.store.get_user("olga").failures == 1  # it counts towards the lock-out
    sig.cancel_button.click()
    assert dlg.error.text() == "✕ not signed: nothing was sent" and dlg.ok_button.isEnabled()
    assert sim.store.signatures() == [] and sim.store.pending_commands() == []


# --- the inactivity lock ------------------------------------------------------------------------


def test_the_inactivity_watch_sees_input_not_every_widgets_events(
    qtbot, open_window, sim: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    """The watch is on the windows, not the application: a filter on the QApplication ran
    Python for every paint and layout event of every widget, each waiting for the GIL
    while the worker built a snapshot (stalls of 100-400 ms in bench/console.py)."""
    w = signed_in(qtbot, open_window, sim, "alice", idle_lock_s=600)
    seen: list[QEvent.Type] = []
    real = ConsoleAccess.eventFilter

    def counting(self: ConsoleAccess, obj: object, event: QEvent) -> bool:
        seen.append(event.type())
        return real(self, obj, event)  # type: ignore[arg-type]

    monkeypatch.setattr(ConsoleAccess, "eventFilter", counting)
    for i in range(w.tabs.count()):  # every tab shown and painted: hundreds of widgets
        w.show_tab(i)
        w.repaint()
        QApplication.processEvents()
    assert len(seen) < 40, sorted({t.name for t in seen})
    dlg = w.control("pause")  # a dialog opened since is watched too
    qtbot.waitUntil(dlg.isVisible)
    seen.clear()
    press(qtbot, dlg)
    assert QEvent.Type.KeyPress in seen


def test_inactivity_locks_and_only_the_users_password_unlocks(
    qtbot, open_window, sim: Sim, wall: VirtualClock
) -> None:  # noqa: ANN001
    w = signed_in(qtbot, open_window, sim, "alice", idle_lock_s=600)
    dlg = w.control("pause")  # half-made: hidden by the lock, shown again after
    qtbot.waitUntil(dlg.isVisible)
    wall.advance(500)
    press(qtbot, dlg)  # input in a dialog: the 10 minutes start again
    wall.advance(300)
    w.access.check_idle()  # what its timer does every second
    assert not w.access.locked
    wall.advance(301)
    qtbot.waitUntil(lambda: w.access.locked, timeout=10_000)  # the timer's own check
    lock = w.access.lock_screen
    assert lock.isVisible() and lock.geometry() == w.rect()
    assert lock.who.text() == "Signed in: Alice Lind (alice) · supervisor"
    assert "after 10 minutes without input" in lock.detail.text()
    assert not dlg.isVisible() and w.access.dialogs_hidden() == [dlg]
    # No action while locked: controls, menus and shortcuts are off, and refused if tried.
    assert not w.centralWidget().isEnabled() and not w.menu_actions["pause"].isEnabled()
    assert not w.menu_actions["abort"].isEnabled() and not w.menu_actions["new"].isEnabled()
    assert w.control("pause") is None
    assert w.messages[-1] == "✕ not allowed: the console is locked: unlock it first"
    assert w.status_bar.actor.text().endswith("· locked")
    # The views go on refreshing underneath.
    sim.store.record("note", entity="run", entity_id=sim.world.run_id, actor="bob", reason="x")
    head = sim.store.head()[0]
    qtbot.waitUntil(lambda: w.snapshot.head_seq == head, timeout=10_000)
    # Someone else's password does not unlock it; the user's does.
    for pw in ("guess", password("olga")):
        lock.password.setText(pw)
        lock.unlock_button.click()
        qtbot.waitUntil(lambda: lock.unlock_button.isEnabled(), timeout=10_000)
        assert lock.error.text() == "✕ wrong user name or password" and w.access.locked
    lock.password.setText(password("alice"))
    qtbot.keyClick(lock.password, Qt.Key.Key_Return)
    qtbot.waitUntil(lambda: not w.access.locked, timeout=10_000)
    assert not lock.isVisible() and dlg.isVisible() and w.menu_actions["pause"].isEnabled()
    wrong = sim.store.events(entity="user", action="password-wrong")
    assert [(e.actor, e.reason) for e in wrong] == [
        ("alice", "wrong password for unlocking the console")
    ] * 2  # olga's password counts against alice's account, the one being unlocked
    assert sim.store.get_user("alice").failures == 0  # reset by the right password


def test_switch_user_signs_out(qtbot, open_window, sim: Sim, wall: VirtualClock) -> None:  # noqa: ANN001
    w = signed_in(qtbot, open_window, sim, "alice", idle_lock_s=600)
    wall.advance(601)
    qtbot.waitUntil(lambda: w.access.locked, timeout=10_000)
    w.access.lock_screen.switch_button.click()
    qtbot.waitUntil(
        lambda: w.access.sign_in_dialog is not None and w.access.sign_in_dialog.isVisible(),
        timeout=10_000,
    )
    assert w.access.user is None and not w.poller.active
    assert w.access.lock_screen.title.text() == "Nobody is signed in"
    qtbot.waitUntil(lambda: bool(sim.store.events(entity="session", action="signed-out")))
    sign_in_window(qtbot, w, "olga")
    assert w.status_bar.actor.text() == "signed in: Olga Berg (olga) · operator"
    assert w.poller.active and not w.access.covered


# --- databases without accounts -----------------------------------------------------------------


def test_a_practice_database_opens_without_accounts(qtbot, open_window) -> None:  # noqa: ANN001
    s = _sim(shared_world(), practice=True)
    try:
        w = open_window(s)
        qtbot.waitUntil(lambda: w.snapshot is not None, timeout=10_000)
        assert w.access.sign_in_dialog is None and not w.access.covered
        assert w.actor == login_name()
        assert w.status_bar.actor.text() == f"{login_name()} (practice database: no accounts)"
        dlg = w.control("abort")
        assert not dlg.signs
        dlg.reason.setText("practice")
        dlg.ok_button.click()
        cmd = wait_for_command(qtbot, s, "abort")
        assert (cmd.actor, cmd.args) == (login_name(), {})  # nothing to sign with
        assert w.commands.last_signature is None
    finally:
        s.close()


def test_a_production_database_without_accounts_is_read_only(qtbot, open_window) -> None:  # noqa: ANN001
    s = _sim(shared_world())
    try:
        w = open_window(s)
        qtbot.waitUntil(lambda: w.snapshot is not None, timeout=10_000)
        assert w.readonly_strip.isVisible()
        assert f"labctl setup --db {s.world.db} --admin NAME" in w.readonly_strip.text()
        assert w.status_bar.actor.text() == "read-only: no user accounts"
        for b in (w.strip.pause, w.strip.skip, w.strip.abort):
            assert not b.isEnabled() and "no user accounts yet" in b.toolTip()
        assert not w.menu_actions["new"].isEnabled()
        assert not w.banner.ack.isEnabled() and "no user accounts" in w.banner.ack.toolTip()
        assert w.control("pause") is None and s.store.pending_commands() == []
        assert w.commands.acknowledge_dialog(w.snapshot.alarms[0].id) is None
    finally:
        s.close()


# --- a new run, and Enter -----------------------------------------------------------------------


def test_a_new_run_needs_a_released_protocol(qtbot, open_window, sim: Sim) -> None:  # noqa: ANN001
    w = signed_in(qtbot, open_window, sim, "alice")
    dlg = w.new_run()
    dlg.path.setText(str(KRIKS))
    dlg.validate()
    qtbot.waitUntil(lambda: dlg.check is not None and dlg.check.ok, timeout=10_000)
    dlg.register()
    qtbot.waitUntil(lambda: dlg.error.text() != "", timeout=20_000)
    assert dlg.error.text() == (
        f"✕ {KRIKS}: kriks2011-da v1.0.0 is not released in {sim.world.db}: a supervisor "
        f"releases it with labctl protocol release {KRIKS} --reason ..."
    )
    assert len(sim.store.list_runs()) == 1  # nothing registered
    dlg.reject()


def test_enter_in_the_reason_field_sends(qtbot, open_window, sim: Sim) -> None:  # noqa: ANN001
    """Issue 16: Enter in the reason of pause/resume/skip cancelled with no message."""
    w = signed_in(qtbot, open_window, sim, "olga")
    dlg = w.control("pause")
    qtbot.waitUntil(dlg.isVisible)
    dlg.reason.setFocus()
    qtbot.keyClicks(dlg.reason, "CO2 low")
    qtbot.keyClick(dlg.reason, Qt.Key.Key_Return)
    cmd = wait_for_command(qtbot, sim, "pause")
    assert (cmd.reason, cmd.actor) == ("CO2 low", "olga")
    assert dlg.isVisible()  # it shows the verdict
    # Without a reason, Enter says what is missing rather than closing.
    dlg2 = w.control("resume")
    qtbot.waitUntil(dlg2.isVisible)
    qtbot.keyClick(dlg2.reason, Qt.Key.Key_Return)
    assert dlg2.isVisible() and "give a reason" in dlg2.error.text()


def test_an_active_users_session_is_kept_alive_and_its_end_locks(
    qtbot, open_window, sim: Sim, wall: VirtualClock
) -> None:  # noqa: ANN001
    w = signed_in(qtbot, open_window, sim, "alice", idle_lock_s=600)
    token = w.access.user.token

    def last_seen() -> str:
        row = sim.store._conn.execute(
            "SELECT last_seen FROM sessions WHERE client = 'console'"
        ).fetchone()
        return str(row[0])

    before = last_seen()
    wall.advance(30)
    qtbot.mouseMove(w.windowHandle(), QPoint(200, 300))  # someone is at the console
    press(qtbot, w)
    wall.advance(40)  # a minute since the session was last marked used
    w.access.check_idle()
    qtbot.waitUntil(lambda: last_seen() != before, timeout=10_000)
    assert not w.access.locked
    # An admin disables the account: the next keep-alive ends the console's use of it.
    sim.store.set_disabled("alice", True, actor="ada", now=wall.now())
    wall.advance(5)
    press(qtbot, w)
    wall.advance(60)
    w.access.check_idle()
    qtbot.waitUntil(lambda: w.access.locked, timeout=10_000)
    lock = w.access.lock_screen
    assert lock.detail.text() == (
        "The session of alice has ended (not signed in (or signed out)). Their password "
        "opens a new one; or switch user."
    )
    assert w.access.user.token == token
    # Her password does not open a new session while the account is disabled.
    lock.password.setText(password("alice"))
    lock.unlock_button.click()
    qtbot.waitUntil(lambda: lock.unlock_button.isEnabled(), timeout=10_000)
    assert lock.error.text() == "✕ the account 'alice' is disabled: ask an admin"
    assert w.access.locked
