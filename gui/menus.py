"""The console's menus, toolbar and keyboard shortcuts."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from PyQt6.QtCore import Qt
from PyQt6.QtGui import QAction, QKeySequence
from PyQt6.QtWidgets import QLabel, QMainWindow, QMenu, QMenuBar, QToolBar, QWidget


@dataclass(frozen=True)
class MenuSlots:
    """What the menu entries do (the window's methods)."""

    new_run: Callable[[], Any]
    refresh: Callable[[], Any]
    training: Callable[[], Any]
    control: Callable[[str], Any]  # pause, resume, release, skip, abort
    confirm_store: Callable[[], Any]  # a held engine: the devices were checked
    answer_first: Callable[[], Any]
    export: Callable[[], Any]
    show_tab: Callable[[int], Any]
    lock: Callable[[], Any]  # lock the console now (the user stays signed in)
    switch_user: Callable[[], Any]  # sign out, and sign someone in


def action(
    window: QWidget,
    text: str,
    slot: Callable[..., Any],
    shortcut: str | QKeySequence.StandardKey | None = None,
    tip: str = "",
) -> QAction:
    """An action of ``window``: its shortcut works anywhere in the window."""
    a = QAction(text, window)
    if shortcut is not None:
        a.setShortcut(QKeySequence(shortcut))
    a.setShortcutContext(Qt.ShortcutContext.WindowShortcut)
    if tip:
        a.setStatusTip(tip)
    a.triggered.connect(slot)
    window.addAction(a)
    return a


def _menu(bar: QMenuBar, title: str, actions: Sequence[QAction | None]) -> QMenu:
    """A menu of ``bar`` with ``actions`` in order (None: a separator)."""
    menu = QMenu(title, bar)
    for a in actions:
        if a is None:
            menu.addSeparator()
        else:
            menu.addAction(a)
    bar.addMenu(menu)
    return menu


def build_menus(
    window: QMainWindow, run_box: QWidget, tabs: Sequence[str], do: MenuSlots
) -> dict[str, QAction]:
    """The Console, Run and View menus and the Run toolbar (with ``run_box``) of ``window``.

    Returns the actions by name (``new``, ``refresh``, ``pause``, ..., ``lock``,
    ``switch-user``); the toolbar is ``window.findChild(QToolBar, "runToolbar")``.
    """
    acts = {
        "new": action(
            window, "&New run…", do.new_run, "Ctrl+N", "Register a run from a protocol file"
        ),
        "refresh": action(window, "&Refresh", do.refresh, "F5", "Read the store now"),
        "training": action(
            window,
            "&Training run…",
            do.training,
            None,
            "Practise on the simulated workcell, a day a minute",
        ),
        "quit": action(window, "&Quit", window.close, "Ctrl+Q"),
        "pause": action(window, "&Pause…", lambda: do.control("pause"), "Ctrl+P"),
        "resume": action(window, "&Resume…", lambda: do.control("resume"), "Ctrl+Shift+P"),
        "release": action(window, "Re&lease run…", lambda: do.control("release")),
        "skip": action(window, "&Skip task…", lambda: do.control("skip"), "Ctrl+K"),
        "abort": action(window, "&Abort run…", lambda: do.control("abort")),
        "answer": action(window, "Answer the first &prompt", do.answer_first, "Ctrl+Return"),
        "confirm-store": action(
            window,
            "&Confirm the devices were checked…",
            do.confirm_store,
            None,
            "A held engine starts work again (a supervisor's decision)",
        ),
        "export": action(window, "&Export batch record…", do.export, "Ctrl+E"),
        "lock": action(
            window, "&Lock the console", do.lock, "Ctrl+L", "Lock now; your password unlocks it"
        ),
        "switch-user": action(
            window,
            "Sign out / &switch user…",
            do.switch_user,
            None,
            "End your session and let someone else sign in",
        ),
    }
    bar = QMenuBar(window)
    window.setMenuBar(bar)
    _menu(
        bar,
        "&Console",
        [acts["new"], acts["refresh"], acts["training"], None, acts["confirm-store"], None]
        + [acts["lock"], acts["switch-user"], None, acts["quit"]],
    )
    run = [acts[k] for k in ("pause", "resume", "release", "skip", "abort")]
    _menu(bar, "&Run", [*run, None, acts["answer"], acts["export"]])
    views = [
        action(window, name, lambda _=False, i=i: do.show_tab(i), f"Ctrl+{i + 1}")
        for i, name in enumerate(tabs)
    ]
    _menu(bar, "&View", views)
    tb = QToolBar("Run", window)
    window.addToolBar(tb)
    tb.setObjectName("runToolbar")
    tb.setMovable(False)
    tb.addWidget(QLabel("  Run "))
    tb.addWidget(run_box)
    tb.addSeparator()
    tb.addAction(acts["new"])
    tb.addAction(acts["refresh"])
    tb.addSeparator()
    tb.addAction(acts["switch-user"])
    return acts
