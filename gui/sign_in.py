"""The screens that say who uses the console: the sign-in dialog, the lock screen that
covers the window after inactivity, and the electronic-signature dialog.

None of them checks a password itself: each emits what was typed, and the window checks it
with the store on its worker thread (:mod:`labctl.gui.access`), then calls ``failed`` with
the store's message (which never says whether the name or the password was wrong) or
closes the screen.
"""

from __future__ import annotations

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import (
    QComboBox,
    QDialog,
    QFormLayout,
    QFrame,
    QHBoxLayout,
    QLabel,
    QLineEdit,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from labctl.accounts import LOCK_AFTER, LOCK_S, Meaning
from labctl.gui import theme
from labctl.gui.auth import ConsoleUser
from labctl.gui.widgets import GuardedDialog, button, label

__all__ = ["LockScreen", "SignInDialog", "SignatureDialog", "enter_submits"]

#: What each meaning says, shown with the choice (Part 11.50: the meaning is part of it).
MEANING_TEXT = {
    Meaning.PERFORMED: "performed: I did this",
    Meaning.REVIEWED: "reviewed: I checked this",
    Meaning.APPROVED: "approved: I approve this",
}


def enter_submits(dialog: QWidget, submit: QPushButton) -> None:
    """Enter anywhere in ``dialog`` presses ``submit`` and never another button.

    A QDialog makes its first auto-default button the default when shown: a Cancel placed
    first then took the Enter pressed in a reason field, cancelling with no message
    (issue 16). No button is auto-default here; ``submit`` is the one default.
    """
    for b in dialog.findChildren(QPushButton):
        b.setAutoDefault(False)
        b.setDefault(False)
    submit.setDefault(True)


def _password_edit(name: str) -> QLineEdit:
    edit = QLineEdit()
    edit.setEchoMode(QLineEdit.EchoMode.Password)
    edit.setObjectName(name)
    edit.setMinimumWidth(260)
    return edit


def _error_label() -> QLabel:
    err = label("", wrap=True)
    err.setObjectName("error")
    err.setStyleSheet(f"color: {theme.VERMILLION}; font-weight: bold;")
    err.setVisible(False)
    return err


class SignInDialog(GuardedDialog):
    """User name and password; ``submitted(name, password)`` when Sign in is pressed,
    ``quit`` when the person leaves instead. Escape does nothing (GuardedDialog)."""

    submitted = pyqtSignal(str, str)
    quit = pyqtSignal()

    def __init__(self, db: str, message: str = "", parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setWindowTitle("Sign in · labctl console")
        self.setMinimumWidth(480)
        lay = QVBoxLayout(self)
        lay.setSpacing(10)
        lay.addWidget(label("Sign in", heading=True))
        lay.addWidget(label(f"Run database {db}", muted=True, wrap=True))
        form = QFormLayout()
        self.name = QLineEdit()
        self.name.setObjectName("name")
        self.name.setPlaceholderText("your user name")
        self.password = _password_edit("password")
        form.addRow("User name", self.name)
        form.addRow("Password", self.password)
        lay.addLayout(form)
        self.error = _error_label()
        lay.addWidget(self.error)
        lay.addWidget(
            label(
                "Every command you give here is recorded under your name, and the signed "
                f"ones need your password again. {LOCK_AFTER} wrong passwords in a row lock "
                f"the account for {LOCK_S // 60} minutes.",
                muted=True,
                wrap=True,
            )
        )
        row = QHBoxLayout()
        row.addStretch(1)
        self.quit_button = button("Quit")
        self.quit_button.setObjectName("quit")
        self.sign_in_button = button("Sign in", "primary")
        self.sign_in_button.setObjectName("signIn")
        row.addWidget(self.quit_button)
        row.addWidget(self.sign_in_button)
        lay.addLayout(row)
        enter_submits(self, self.sign_in_button)
        self.quit_button.clicked.connect(self._quit)
        self.sign_in_button.clicked.connect(self._submit)
        if message:
            self.failed(message)
        self.name.setFocus()

    def _submit(self) -> None:
        name = self.name.text().strip()
        if not name or not self.password.text():
            self.failed("enter your user name and password")
            return
        self.error.setVisible(False)
        self.sign_in_button.setEnabled(False)
        self.sign_in_button.setText("Checking…")
        self.submitted.emit(name, self.password.text())

    def failed(self, message: str) -> None:
        """The store refused: say why, clear the password, let them try again."""
        self.error.setText(f"✕ {message}")
        self.error.setVisible(True)
        self.password.clear()
        self.sign_in_button.setEnabled(True)
        self.sign_in_button.setText("Sign in")
        (self.password if self.name.text() else self.name).setFocus()

    def done_ok(self) -> None:
        self.password.clear()
        self.close_by_button(True)

    def _quit(self) -> None:
        self.close_by_button(False)
        self.quit.emit()


class LockScreen(QFrame):
    """Covers the main window while it is locked (or nobody is signed in): who is signed
    in, their password to unlock, or Switch user (which signs them out).

    A child of the window laid over everything (:meth:`cover`); the window disables its
    own widgets meanwhile, so nothing under it takes a key or a click.
    """

    unlock = pyqtSignal(str)
    switch_user = pyqtSignal()

    def __init__(self, parent: QWidget) -> None:
        super().__init__(parent)
        self.setObjectName("lockScreen")
        self.setAutoFillBackground(True)
        self.setStyleSheet(
            "QFrame#lockScreen { background: #26303B; }"
            f" QFrame#lockCard {{ background: {theme.PAPER}; border-radius: 8px; }}"
        )
        outer = QVBoxLayout(self)
        outer.addStretch(1)
        mid = QHBoxLayout()
        mid.addStretch(1)
        card = QFrame()
        card.setObjectName("lockCard")
        card.setMinimumWidth(520)
        card.setMaximumWidth(620)
        lay = QVBoxLayout(card)
        lay.setContentsMargins(28, 24, 28, 24)
        lay.setSpacing(10)
        self.title = label("Console locked", heading=True)
        lay.addWidget(self.title)
        self.who = label("", sub=True, wrap=True)
        self.who.setObjectName("who")
        lay.addWidget(self.who)
        self.detail = label("", muted=True, wrap=True)
        lay.addWidget(self.detail)
        self.password_row = QWidget()
        form = QFormLayout(self.password_row)
        form.setContentsMargins(0, 0, 0, 0)
        self.password = _password_edit("unlockPassword")
        form.addRow("Password", self.password)
        lay.addWidget(self.password_row)
        self.error = _error_label()
        lay.addWidget(self.error)
        row = QHBoxLayout()
        row.addStretch(1)
        self.switch_button = button("Switch user")
        self.switch_button.setObjectName("switchUser")
        self.switch_button.setToolTip("Sign this user out and sign another in")
        self.unlock_button = button("Unlock", "primary")
        self.unlock_button.setObjectName("unlock")
        row.addWidget(self.switch_button)
        row.addWidget(self.unlock_button)
        lay.addLayout(row)
        mid.addWidget(card)
        mid.addStretch(1)
        outer.addLayout(mid)
        outer.addStretch(2)
        self.unlock_button.clicked.connect(self._unlock)
        self.password.returnPressed.connect(self._unlock)
        self.switch_button.clicked.connect(self.switch_user)
        self.hide()

    def cover(self) -> None:
        """Lie over the whole window, on top."""
        parent = self.parentWidget()
        if parent is not None:
            self.setGeometry(parent.rect())
        self.raise_()

    def show_locked(self, user: ConsoleUser, detail: str) -> None:
        """Locked: ``user`` is still signed in; only their password unlocks."""
        self.title.setText("Console locked")
        self.who.setText(f"Signed in: {user.label()}")
        self.detail.setText(detail)
        self.password_row.show()
        self.unlock_button.show()
        self.unlock_button.setEnabled(True)
        self.switch_button.show()
        self.error.setVisible(False)
        self.password.clear()
        self.cover()
        self.show()
        self.password.setFocus()

    def show_signed_out(self, detail: str) -> None:
        """Nobody is signed in (before the first sign-in, after Switch user)."""
        self.title.setText("Nobody is signed in")
        self.who.setText("")
        self.detail.setText(detail)
        self.password_row.hide()
        self.unlock_button.hide()
        self.switch_button.hide()
        self.error.setVisible(False)
        self.cover()
        self.show()

    def _unlock(self) -> None:
        if not self.unlock_button.isVisible() or not self.unlock_button.isEnabled():
            return
        if not self.password.text():
            self.failed("enter your password")
            return
        self.error.setVisible(False)
        self.unlock_button.setEnabled(False)
        self.unlock_button.setText("Checking…")
        self.unlock.emit(self.password.text())

    def failed(self, message: str) -> None:
        self.error.setText(f"✕ {message}")
        self.error.setVisible(True)
        self.password.clear()
        self.unlock_button.setEnabled(True)
        self.unlock_button.setText("Unlock")
        self.password.setFocus()


class SignatureDialog(QDialog):
    """An electronic signature: what is signed (action, run, reason), who signs, the
    meaning (the action's default from :data:`labctl.accounts.SIGNED`) and the password.
    ``sign(meaning, password)`` when Sign is pressed; the sender calls :meth:`failed`
    (wrong password: nothing was signed) or :meth:`signed_ok`."""

    sign = pyqtSignal(object, str)

    def __init__(
        self,
        user: ConsoleUser,
        *,
        action: str,
        what: str,
        run: str,
        reason: str,
        meaning: Meaning,
        parent: QWidget | None = None,
    ) -> None:
        super().__init__(parent)
        self.setWindowTitle(f"Sign: {action}")
        self.setMinimumWidth(580)
        lay = QVBoxLayout(self)
        lay.setSpacing(10)
        lay.addWidget(label("Electronic signature", heading=True))
        lay.addWidget(
            label(
                "Your signature is recorded with your full name, the date and time, its "
                "meaning and the SHA-256 of what you sign, and is bound to the command.",
                muted=True,
                wrap=True,
            )
        )
        box = QFrame()
        box.setProperty("card", True)
        form = QFormLayout(box)
        self.what = QLabel(f"<b>{_esc(what)}</b>")
        self.what.setObjectName("what")
        self.what.setWordWrap(True)
        form.addRow("Action", QLabel(f"{_esc(action)}"))
        form.addRow("What", self.what)
        form.addRow("Run", label(run, wrap=True))
        self.reason = label(reason, wrap=True)
        self.reason.setObjectName("reason")
        form.addRow("Reason", self.reason)
        form.addRow("Signed by", label(user.label(), wrap=True))
        lay.addWidget(box)
        inputs = QFormLayout()
        self.meaning = QComboBox()
        self.meaning.setObjectName("meaning")
        for m in Meaning:
            self.meaning.addItem(MEANING_TEXT[m], m)
        self.meaning.setCurrentIndex(self.meaning.findData(meaning))
        self.password = _password_edit("signPassword")
        inputs.addRow("Meaning", self.meaning)
        inputs.addRow(f"Password of {user.name}", self.password)
        lay.addLayout(inputs)
        self.error = _error_label()
        lay.addWidget(self.error)
        row = QHBoxLayout()
        row.addStretch(1)
        self.cancel_button = button("Cancel")
        self.cancel_button.setObjectName("cancel")
        self.sign_button = button("Sign and send", "danger")
        self.sign_button.setObjectName("sign")
        row.addWidget(self.cancel_button)
        row.addWidget(self.sign_button)
        lay.addLayout(row)
        enter_submits(self, self.sign_button)
        self.cancel_button.clicked.connect(self.reject)
        self.sign_button.clicked.connect(self._sign)
        self.password.setFocus()

    def chosen_meaning(self) -> Meaning:
        return Meaning(self.meaning.currentData())

    def _sign(self) -> None:
        if not self.password.text():
            self.failed("enter your password to sign")
            return
        self.error.setVisible(False)
        self.sign_button.setEnabled(False)
        self.sign_button.setText("Signing…")
        self.sign.emit(self.chosen_meaning(), self.password.text())

    def failed(self, message: str) -> None:
        """Not signed (a wrong password never signs): say why; try again or cancel."""
        self.error.setText(f"✕ not signed: {message}")
        self.error.setVisible(True)
        self.password.clear()
        self.sign_button.setEnabled(True)
        self.sign_button.setText("Sign and send")
        self.password.setFocus()

    def signed_ok(self) -> None:
        self.password.clear()
        self.accept()


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
