"""Who uses a console window, and whether they may act now: sign-in, lock after inactivity,
unlock, switch user, and the reason an action is not allowed.

:class:`ConsoleAccess` belongs to one main window. On start it asks the store (on the
worker thread) how the database is used (:func:`labctl.gui.auth.access_of`):

* with accounts, the window stays covered (:class:`~labctl.gui.sign_in.LockScreen`) and
  shows nothing until someone signs in (:class:`~labctl.gui.sign_in.SignInDialog`);
* a practice database without accounts, or a training window, opens as it always did,
  the actor being the name given (the operating system's login name by default);
* a production database without accounts opens read-only: every action is disabled and
  says why (an admin must run ``labctl setup`` first).

After ``idle_s`` without a key press, click, wheel or mouse move in the window or its
dialogs (timed with the injected wall clock, checked by a QTimer) the window locks: the
lock screen covers it, open dialogs are hidden, every action is disabled, and only the
signed-in user's password unlocks it (or Switch user, which signs them out). The views
go on refreshing underneath. While the user is active the store session is kept alive
once a minute; a session that ended (12 h, or an admin's doing) locks the window too.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any

from PyQt6.QtCore import QEvent, QObject, QTimer, pyqtSignal
from PyQt6.QtWidgets import QApplication, QDialog, QWidget

from labctl.accounts import Action, AuthError
from labctl.clock import Clock
from labctl.gui.auth import (
    Access,
    ConsoleUser,
    access_of,
    keep_alive,
    not_set_up_text,
    practice_user,
    sign_in,
    sign_out,
    unlock,
)
from labctl.gui.sign_in import LockScreen, SignInDialog
from labctl.gui.widgets import GuardedDialog
from labctl.gui.worker import StoreBridge

__all__ = ["IDLE_LOCK_S", "ConsoleAccess"]

IDLE_LOCK_S = 10 * 60.0  # seconds without input before the window locks (the default)
KEEP_ALIVE_S = 60.0  # how often an active user's store session is marked used, seconds

#: The input that counts as someone at the console.
ACTIVITY = frozenset(
    {
        QEvent.Type.KeyPress,
        QEvent.Type.MouseButtonPress,
        QEvent.Type.MouseButtonDblClick,
        QEvent.Type.MouseMove,
        QEvent.Type.Wheel,
        QEvent.Type.TouchBegin,
    }
)


class ConsoleAccess(QObject):
    """Sign-in, lock and permissions of one console window (see the module text).

    ``actor``: the name on a practice database without accounts; ``training``: the window
    watches a training simulation (needs no account); ``idle_s``: seconds of inactivity
    before the window locks.
    """

    #: The user, the lock or the database's access changed: re-apply permissions.
    changed = pyqtSignal()
    #: Whether the views may read the store (False before the sign-in, after sign-out).
    viewing = pyqtSignal(bool)
    #: The person chose Quit on the sign-in dialog.
    quit = pyqtSignal()
    #: A line for the status bar.
    said = pyqtSignal(str)

    def __init__(
        self,
        window: QWidget,
        bridge: StoreBridge,
        wall: Clock,
        *,
        actor: str | None = None,
        training: bool = False,
        idle_s: float = IDLE_LOCK_S,
    ) -> None:
        super().__init__(window)
        self.window = window
        self.bridge = bridge
        self.wall = wall
        self.actor = actor
        self.training = training
        self.idle_s = idle_s
        self.mode: Access | None = None
        self.user: ConsoleUser | None = None
        self.locked = False
        self.failure = ""  # why the database's access could not be read
        self.lock_screen = LockScreen(window)
        self.lock_screen.unlock.connect(self._unlock)
        self.lock_screen.switch_user.connect(self.switch_user)
        self.sign_in_dialog: SignInDialog | None = None
        self._hidden: list[QDialog] = []  # dialogs hidden by the lock, shown again on unlock
        self._last_input = wall.monotonic()
        self._kept_alive = wall.monotonic()
        self.timer = QTimer(self)
        self.timer.setInterval(int(max(50.0, min(1000.0, idle_s * 250.0))))
        self.timer.timeout.connect(self.check_idle)
        # Input is watched on the window's (and its dialogs') QWindow, where the platform
        # delivers every key press and mouse event, never on the QApplication: a Python
        # filter there runs for every event of every widget (paint, layout, timers), and
        # each call waits for the GIL while the worker thread builds a snapshot. That
        # made the console stall for hundreds of milliseconds (bench/console.py).
        self._watch(window)

    # --- state ------------------------------------------------------------------------------

    def start(self) -> None:
        """Find out how the database is used, then sign in (or open, or open read-only)."""
        if self.training:
            self._mode_known(Access.PRACTICE)
            return
        self.bridge.call(access_of, self._mode_known, self._mode_failed)

    @property
    def may_view(self) -> bool:
        return self.mode is not None and (self.mode is not Access.ACCOUNTS or self.user is not None)

    @property
    def covered(self) -> bool:
        """Whether the lock screen covers the window (locked, or nobody signed in)."""
        return self.mode is Access.ACCOUNTS and (self.user is None or self.locked)

    def why_not(self, action: Action, registered_by: str | None = None) -> str | None:
        """None when the user may take ``action`` now (on a run registered by
        ``registered_by``), else why not, for a tooltip or a refusal."""
        if self.mode is None:
            return self.failure or "the console is still reading the database"
        if self.mode is Access.NOT_SET_UP:
            return (
                "this database has no user accounts yet (labctl setup): the console only shows it"
            )
        if self.user is None:
            return "nobody is signed in"
        if self.locked:
            return "the console is locked: unlock it first"
        return self.user.why_not(action, registered_by)

    def status_text(self) -> str:
        """Who is at the console, for the status bar."""
        if self.mode is Access.NOT_SET_UP:
            return "read-only: no user accounts"
        if self.user is None:
            return "nobody signed in"
        if not self.user.has_account:
            return f"{self.user.name} (practice database: no accounts)"
        return f"signed in: {self.user.label()}" + (" · locked" if self.locked else "")

    def _mode_known(self, mode: Access) -> None:
        self.mode = mode
        if mode is Access.ACCOUNTS:
            self.lock_screen.show_signed_out("Sign in to see and act on the runs.")
            self.changed.emit()
            self.open_sign_in()
            return
        if mode is Access.PRACTICE:
            self.user = practice_user(self.actor)
        else:
            self.said.emit(not_set_up_text(self.bridge.path))
        self.changed.emit()
        self.viewing.emit(True)

    def _mode_failed(self, message: str) -> None:
        self.failure = f"the console could not read who may use the database: {message}"
        self.said.emit(self.failure)
        self.changed.emit()
        self.viewing.emit(True)  # the views say what is wrong with the store

    # --- signing in and out ------------------------------------------------------------------

    def open_sign_in(self, message: str = "") -> SignInDialog:
        dlg = SignInDialog(str(self.bridge.path), message, self.window)
        dlg.submitted.connect(lambda name, pw: self._sign_in(name, pw, dlg))
        dlg.quit.connect(self.quit)
        self.sign_in_dialog = dlg
        dlg.open()
        return dlg

    def _sign_in(self, name: str, password: str, dlg: SignInDialog) -> None:
        wall = self.wall

        def done(user: ConsoleUser) -> None:
            dlg.done_ok()
            self._signed_in(user)

        self.bridge.call(lambda s: sign_in(s, name, password, now=wall.now()), done, dlg.failed)

    def _signed_in(self, user: ConsoleUser) -> None:
        self.user = user
        self.locked = False
        self._last_input = self._kept_alive = self.wall.monotonic()
        self.lock_screen.hide()
        self.window.activateWindow()  # the keys (and shortcuts) go to the window again
        self.timer.start()
        self.said.emit(f"Signed in as {user.label()}.")
        self.changed.emit()
        self.viewing.emit(True)

    def switch_user(self) -> None:
        """Sign the user out (their session ends) and ask who signs in next."""
        if self.mode is not Access.ACCOUNTS:
            return
        who, wall = self.user, self.wall
        if who is not None:
            self.bridge.call(lambda s: sign_out(s, who, now=wall.now()))
        self.user = None
        self.locked = False
        self.timer.stop()
        self._close_dialogs()
        self.lock_screen.show_signed_out(
            f"{who.name} signed out." if who else "Sign in to see and act on the runs."
        )
        self.viewing.emit(False)
        self.changed.emit()
        self.open_sign_in()

    def sign_out_on_close(self) -> Callable[[Any], None] | None:
        """What ends the session when the window closes (run on the worker's store)."""
        who, wall = self.user, self.wall
        if who is None or who.token is None:
            return None
        return lambda store: sign_out(store, who, now=wall.now())

    # --- locking ------------------------------------------------------------------------------

    def lock(self, detail: str = "") -> None:
        """Cover the window; only the signed-in user's password unlocks it."""
        if self.mode is not Access.ACCOUNTS or self.user is None or self.locked:
            return
        self.locked = True
        for dlg in self.window.findChildren(QDialog):
            if dlg.isVisible():
                dlg.hide()
                self._hidden.append(dlg)
        at = _local_hhmm(self.wall.now())
        self.lock_screen.show_locked(
            self.user,
            detail
            or (
                f"Locked at {at} after {_duration(self.idle_s)} without input. The views go "
                f"on updating underneath; nothing can be done until {self.user.name}'s "
                "password unlocks the console."
            ),
        )
        self.said.emit(f"Console locked ({self.user.name} is still signed in).")
        self.changed.emit()

    def _unlock(self, password: str) -> None:
        who, wall = self.user, self.wall
        if who is None:
            return

        def done(user: ConsoleUser) -> None:
            self.user = user
            self.locked = False
            self._last_input = self._kept_alive = self.wall.monotonic()
            self.lock_screen.hide()
            self.window.activateWindow()
            for dlg in self._hidden:
                dlg.show()
            self._hidden = []
            self.said.emit(f"Unlocked by {user.name}.")
            self.changed.emit()

        self.bridge.call(
            lambda s: unlock(s, who, password, now=wall.now()), done, self.lock_screen.failed
        )

    def dialogs_hidden(self) -> list[QDialog]:
        """The dialogs the lock hid (shown again when the same user unlocks)."""
        return list(self._hidden)

    def _close_dialogs(self) -> None:
        """Close the signed-out user's dialogs (their half-made commands are theirs)."""
        for dlg in [*self._hidden, *self.window.findChildren(QDialog)]:
            if isinstance(dlg, SignInDialog) or not (dlg.isVisible() or dlg in self._hidden):
                continue
            if isinstance(dlg, GuardedDialog):
                dlg.close_by_button(False)
            else:
                dlg.reject()
        self._hidden = []

    # --- inactivity -----------------------------------------------------------------------------

    def eventFilter(self, obj: QObject | None, event: QEvent | None) -> bool:  # noqa: N802
        if event is None:
            return False
        kind = event.type()
        if kind in ACTIVITY:
            self._last_input = self.wall.monotonic()
        elif kind == QEvent.Type.ChildPolished:
            # A dialog of ours is about to show: watch it (and the dialogs it opens).
            child = event.child()  # type: ignore[attr-defined]
            if isinstance(child, QWidget) and child.isWindow():
                self._watch(child)
        elif kind == QEvent.Type.Show and isinstance(obj, QWidget) and obj.isWindow():
            handle = obj.windowHandle()  # made when the window is first shown
            if handle is not None:
                handle.installEventFilter(self)  # Qt keeps one entry per filter
        return False

    def _watch(self, w: QWidget) -> None:
        """Watch a top-level window of ours: its input (on its QWindow, once shown), its
        Show, and the dialogs polished as its children. Only these objects' own events
        reach the filter, a few a second, not every widget's."""
        w.installEventFilter(self)
        handle = w.windowHandle()
        if handle is not None:
            handle.installEventFilter(self)

    def _ours(self, w: QWidget | None) -> bool:
        while w is not None:
            if w is self.window:
                return True
            w = w.parentWidget()
        return False

    def check_idle(self) -> None:
        """Lock after ``idle_s`` without input; keep an active user's session alive.
        Called by the timer (at most every second), or by anyone who moved the clock."""
        if self.user is None or not self.user.has_account or self.locked:
            return
        now = self.wall.monotonic()
        if now - self._last_input >= self.idle_s:
            self.lock()
        elif self._last_input > self._kept_alive and now - self._kept_alive >= KEEP_ALIVE_S:
            self._kept_alive = now
            self._keep_alive()

    def _keep_alive(self) -> None:
        who, wall = self.user, self.wall
        if who is None:
            return

        def fn(store: Any) -> str | None:
            try:
                keep_alive(store, who, now=wall.now())
            except AuthError as exc:
                return exc.user_message()
            return None

        def done(ended: str | None) -> None:
            if ended and self.user is who:
                # The store words it for the CLI ("...: labctl login NAME"): keep the why.
                why = ended.split(": labctl login")[0].split(": sign in again")[0]
                self.lock(
                    f"The session of {who.name} has ended ({why}). Their password opens a "
                    "new one; or switch user."
                )

        self.bridge.call(fn, done)

    def shutdown(self) -> None:
        self.timer.stop()
        for w in QApplication.topLevelWidgets():
            if self._ours(w):
                w.removeEventFilter(self)
                handle = w.windowHandle()
                if handle is not None:
                    handle.removeEventFilter(self)


def _duration(seconds: float) -> str:
    if seconds >= 60:
        m = round(seconds / 60)
        return f"{m} minute{'s' if m != 1 else ''}"
    return f"{seconds:g} s"


def _local_hhmm(now: datetime) -> str:
    """``now`` on this computer's clock face (the lock is about this console)."""
    return f"{now.astimezone():%H:%M}"
