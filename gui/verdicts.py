"""What became of the operator's commands, and whether an engine runs, on screen.

- :class:`VerdictList`: one line per command, "✓ applied", "✕ rejected: why", "⚠ queued:
  no engine is running ..." or "◷ waiting", each with its symbol and words in its colour
  (never colour alone). The command dialogs show it once they have sent.
- :class:`VerdictPanel`: the same over the main window's tabs, for the commands this
  console sent, until the operator dismisses them.
- :class:`EngineStrip`: the engine's state across the top of the main window, always
  visible; red with words when no engine carries the runs out.
"""

from __future__ import annotations

from datetime import datetime

from PyQt6.QtCore import pyqtSignal
from PyQt6.QtWidgets import QFrame, QHBoxLayout, QLabel, QSizePolicy, QVBoxLayout, QWidget

from labctl.gui import theme
from labctl.gui.models.commands import Verdict
from labctl.gui.models.common import duration_text, seconds_text, when_text
from labctl.gui.models.engine import EngineView, stale_view
from labctl.gui.widgets import button, label, paper_strip

SYMBOLS = {"applied": "✓", "rejected": "✕", "queued": "⚠", "waiting": "◷"}
# Readable on white (ORANGE itself is too light for text).
COLOURS = {
    "applied": "#00704F",
    "rejected": theme.VERMILLION,
    "queued": "#8A5A00",
    "waiting": theme.MUTED,
}
BACKGROUNDS = {
    "applied": "#E6F4EE",
    "rejected": "#FBE3D6",
    "queued": "#FFF4D6",
    "waiting": "#F3F4F6",
}


def verdict_html(v: Verdict, *, compact: bool = False) -> str:
    """The verdict first (symbol and words), then which command it was (on a line of its
    own, or after a dash when ``compact``)."""
    return (
        f"<b style='color:{COLOURS[v.state]}'>{SYMBOLS[v.state]} {_esc(v.text)}</b>"
        + (" — " if compact else "<br>")
        + f"<span style='color:{theme.MUTED}'>command {v.command_id} · {_esc(v.what)}</span>"
    )


def _esc(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class VerdictList(QWidget):
    """Verdicts, one box each, updated in place as the engine decides (one line each when
    ``compact``)."""

    def __init__(self, parent: QWidget | None = None, *, compact: bool = False) -> None:
        super().__init__(parent)
        self.compact = compact
        self.lay = QVBoxLayout(self)
        self.lay.setContentsMargins(0, 0, 0, 0)
        self.lay.setSpacing(4)
        self.verdicts: dict[int, Verdict] = {}
        self.lines: dict[int, QLabel] = {}

    def show_verdict(self, v: Verdict) -> None:
        lab = self.lines.get(v.command_id)
        if lab is None:
            lab = QLabel()
            lab.setObjectName(f"verdict:{v.command_id}")
            lab.setWordWrap(True)
            self.lines[v.command_id] = lab
            self.lay.addWidget(lab)
        if self.verdicts.get(v.command_id) == v:
            return
        self.verdicts[v.command_id] = v
        lab.setText(verdict_html(v, compact=self.compact))
        lab.setStyleSheet(
            f"background: {BACKGROUNDS[v.state]}; border: 1px solid {COLOURS[v.state]};"
            f" border-radius: 4px; padding: {3 if self.compact else 6}px;"
        )

    def forget(self, command_id: int) -> None:
        lab = self.lines.pop(command_id, None)
        self.verdicts.pop(command_id, None)
        if lab is not None:
            self.lay.removeWidget(lab)
            lab.deleteLater()

    def text(self) -> str:
        """Every verdict as plain lines (tests, screen readers)."""
        return "\n".join(v.line() for v in self.verdicts.values())


class VerdictPanel(QFrame):
    """The verdicts of the commands sent from this console, over the tabs until dismissed
    (the ones still waiting or queued stay)."""

    KEEP = 4  # the newest this many are shown

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        lay = paper_strip(self, "verdictPanel", margins=6)
        title = label("Your commands", sub=True)
        title.setSizePolicy(QSizePolicy.Policy.Fixed, QSizePolicy.Policy.Preferred)
        self.list = VerdictList(compact=True)
        self.dismiss = button("Dismiss")
        self.dismiss.setToolTip("Hide the commands the engine has decided on")
        self.dismiss.clicked.connect(self.dismiss_final)
        lay.addWidget(title)
        lay.addWidget(self.list, 1)
        lay.addWidget(self.dismiss)
        self.hide()

    def show_verdict(self, v: Verdict) -> None:
        self.list.show_verdict(v)
        for old in list(self.list.verdicts)[: -self.KEEP]:
            self.list.forget(old)
        self.show()

    def dismiss_final(self) -> None:
        for cid, v in list(self.list.verdicts.items()):
            if v.final:
                self.list.forget(cid)
        self.setVisible(bool(self.list.verdicts))

    def text(self) -> str:
        return self.list.text()


_LEVEL_SYMBOL = {
    "running": "▶",
    "starting": "○",
    "held": "⚑",
    "stale": "✕",
    "down": "✕",
    "unknown": "?",
}


class EngineStrip(QFrame):
    """Whether an engine carries the runs out: always shown, under the toolbar.

    One calm green line while an engine runs. Orange while it is held, with why, what to do
    and ``confirm`` (the supervisor's "Confirm the devices were checked…"). When no engine
    runs or it stopped beating, runs are not carried out: the strip turns black with large
    yellow words (a hazard sign, apart from the vermillion alarm banner below it) and says
    since when, why, and what to do.
    """

    confirm = pyqtSignal()

    CALM = ("running", "starting")
    #: Said after the engine's times when the console's "now" is a paced practice clock:
    #: heartbeats are this computer's time, not the workcell's (set by the window).
    wall_note = ""

    def __init__(self, parent: QWidget | None = None) -> None:
        super().__init__(parent)
        self.setObjectName("engineStrip")
        self.setProperty("level", "")
        loud = [f'#engineStrip[level="{x}"]' for x in ("stale", "down", "unknown")]
        self.setStyleSheet(
            f"#engineStrip {{ background: #E6F4EE; border-bottom: 1px solid {theme.RULE}; }}"
            '#engineStrip[level="starting"] { background: #FFF4D6; }'
            f'#engineStrip[level="held"] {{ background: {theme.ORANGE};'
            f" border-bottom: 3px solid {theme.INK}; }}"
            + ", ".join(loud)
            + f" {{ background: {theme.INK}; border-bottom: 4px solid {theme.YELLOW}; }}"
            + ", ".join(f"{x} QLabel" for x in loud)
            + " { color: white; }"
            + ", ".join(f"{x} QLabel#engineHeadline" for x in loud)
            + f" {{ color: {theme.YELLOW}; }}"
            f'#engineStrip[level="running"] QLabel#engineHeadline {{ color: {COLOURS["applied"]}; }}'
            "#engineStrip QPushButton { background: white; color: #1B1F24; border: none;"
            " border-radius: 4px; padding: 6px 14px; font-weight: bold; }"
            "#engineStrip QPushButton:focus { border: 2px solid black; }"
        )
        self.col = QVBoxLayout(self)
        self.col.setContentsMargins(14, 6, 10, 6)
        self.col.setSpacing(2)
        self.row = QHBoxLayout()
        self.row.setSpacing(14)
        self.headline = QLabel("? ENGINE: reading the run database…")
        self.headline.setObjectName("engineHeadline")
        # A long headline ("… since Sat 21 Nov 09:00 CET (15 d 4 h ago) …") wraps inside the
        # window rather than widen it past the screen.
        self.headline.setWordWrap(True)
        self.detail = QLabel("")
        self.detail.setObjectName("engineDetail")
        self.detail.setWordWrap(True)
        # Long details wrap inside the window, never widen it.
        self.detail.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.confirm_button = button("Confirm the devices were checked…")
        self.confirm_button.setObjectName("confirmStore")
        self.confirm_button.setToolTip(
            "A supervisor's word that every device was checked against the run database: "
            "the held engine starts work again (needs a reason and your password)"
        )
        self.confirm_button.clicked.connect(self.confirm)
        self.confirm_button.hide()
        self.row.addWidget(self.headline, 1)
        self.row.addWidget(self.confirm_button)
        self.col.addLayout(self.row)
        self.advice = QLabel("")
        self.advice.setObjectName("engineAdvice")
        self.advice.setWordWrap(True)
        self.advice.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Preferred)
        self.advice.hide()
        self.col.addWidget(self.advice)
        self.engine: EngineView | None = None  # what the strip shows (aged by tick)
        self.reading: EngineView | None = None  # the last reading from the store
        self.zone = "UTC"  # the workcell's zone, for the times shown
        self.wall_now: datetime | None = None
        self._apply_level("unknown")

    @property
    def level(self) -> str:
        return str(self.property("level"))

    @property
    def loud(self) -> bool:
        return self.level in ("stale", "down", "unknown")

    def set_engine(self, e: EngineView) -> None:
        """Show a new reading (every poll; cheap when nothing but the seconds changed)."""
        self.reading = e
        self._show(e)

    def tick(self, wall_now: datetime, zone: str | None = None) -> None:
        """Age the last reading to ``wall_now`` (every second): an engine whose heartbeat
        is over three beats old turns the strip loud even if no new reading comes."""
        if zone:
            self.zone = zone
        self.wall_now = wall_now
        if self.reading is not None:
            self._show(stale_view(self.reading, wall_now))

    def _show(self, e: EngineView) -> None:
        self.engine = e
        self._apply_level(e.level)
        z, now = self.zone, self.wall_now
        headline = e.headline
        if e.loud and e.since is not None:
            ago = f" ({duration_text((now - e.since).total_seconds())} ago)" if now else ""
            headline = headline.replace(":", f" since {when_text(e.since, z, now)}{ago}:", 1)
        elif e.loud and not e.ever and e.level == "down":
            headline = headline.replace(":", " (none has ever run on this database):", 1)
        self.headline.setText(f"{_LEVEL_SYMBOL[e.level]} {headline}")
        beat = ""
        if e.heartbeat_at is not None and e.level != "down":
            beat = f" · last heartbeat {seconds_text(e.heartbeat_at, z)}{self.wall_note}"
            if now is not None:
                beat += f" ({duration_text(max(0.0, (now - e.heartbeat_at).total_seconds()))} ago)"
        self.detail.setText(e.detail + beat)
        self.advice.setText(f"<b>What to do:</b> {_esc(e.advice)}")
        self.advice.setVisible(bool(e.advice) and e.level != "running")
        self.confirm_button.setVisible(e.can_confirm)

    def set_unknown(self, message: str) -> None:
        """The run database could not be read: nothing is known of the engine."""
        self.engine = self.reading = None
        self._apply_level("unknown")
        self.headline.setText("? ENGINE STATE UNKNOWN: the run database cannot be read")
        self.detail.setText(message)
        self.advice.setText(
            "<b>What to do:</b> check the disk and the database file; the console retries at every poll."
        )
        self.advice.show()
        self.confirm_button.hide()

    def text(self) -> str:
        """What the strip says, as plain text (tests, screen readers)."""
        parts = [self.headline.text(), self.detail.text()]
        if self.advice.isVisibleTo(self):
            parts.append(self.advice.text())
        return " · ".join(p for p in parts if p)

    def _apply_level(self, level: str) -> None:
        if self.property("level") == level:
            return
        was_calm = self.property("level") in self.CALM
        self.setProperty("level", level)
        f = self.headline.font()
        f.setBold(True)
        base = self.font().pointSizeF()
        f.setPointSizeF(base * (1.0 if level in self.CALM else 1.4))
        self.headline.setFont(f)
        self.setAccessibleName(f"engine {level}")
        # Calm: the detail beside the headline, one slim line. Otherwise a line of its own.
        calm = level in self.CALM
        if calm != was_calm or self.detail.parent() is None:
            self.row.removeWidget(self.detail)
            self.col.removeWidget(self.detail)
            if calm:
                self.row.insertWidget(1, self.detail, 3)
            else:
                self.col.insertWidget(1, self.detail)
        # A dynamic property restyles only when the style sheet is applied again.
        for w in (self, self.headline, self.detail, self.advice, self.confirm_button):
            style = w.style()
            if style is not None:
                style.unpolish(w)
                style.polish(w)
