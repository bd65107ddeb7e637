"""Colours, symbols and the style sheet of the console.

State colours are the Okabe-Ito palette (readable with the common colour-vision
deficiencies), and a colour never carries meaning alone: every state is drawn with its
symbol and its word as well (``"▶ running"``, ``"✕ failed"``).
"""

from __future__ import annotations

from dataclasses import dataclass

from PyQt6.QtGui import QColor, QFont, QPalette
from PyQt6.QtWidgets import QApplication

# Okabe & Ito (2008), "Color Universal Design".
BLACK = "#000000"
ORANGE = "#E69F00"
SKY_BLUE = "#56B4E9"
BLUISH_GREEN = "#009E73"
YELLOW = "#F0E442"
BLUE = "#0072B2"
VERMILLION = "#D55E00"
REDDISH_PURPLE = "#CC79A7"
GREY = "#6E6E6E"

INK = "#1B1F24"  # body text
MUTED = "#5A6270"  # secondary text
RULE = "#D5D9E0"  # lines
PAPER = "#FFFFFF"
CANVAS = "#F3F4F6"  # window background


@dataclass(frozen=True)
class Tone:
    """How one family of states looks: fill colour, text colour on it, and symbol."""

    fill: str
    text: str
    symbol: str


TONES: dict[str, Tone] = {
    "running": Tone(BLUE, "#FFFFFF", "▶"),
    "ok": Tone(BLUISH_GREEN, "#FFFFFF", "✓"),
    "pending": Tone("#E4E7EC", INK, "○"),
    "idle": Tone("#E4E7EC", INK, "○"),
    "paused": Tone(SKY_BLUE, INK, "‖"),
    "holding": Tone(ORANGE, INK, "⚑"),
    "fault": Tone(VERMILLION, "#FFFFFF", "✕"),
    "skipped": Tone(REDDISH_PURPLE, INK, "↷"),
}


def tone(name: str) -> Tone:
    return TONES.get(name, TONES["pending"])


def badge_text(state: str, tone_name: str) -> str:
    """``"▶ running"``: the symbol and the word, never the colour alone."""
    return f"{tone(tone_name).symbol} {state}"


def qcolor(hex_: str, alpha: int = 255) -> QColor:
    c = QColor(hex_)
    c.setAlpha(alpha)
    return c


STYLE_SHEET = f"""
QMainWindow, QDialog {{ background: {CANVAS}; }}
QWidget {{ color: {INK}; }}
QTabWidget::pane {{ border: 1px solid {RULE}; background: {PAPER}; top: -1px; }}
QTabBar::tab {{
    background: transparent; padding: 8px 16px; margin-right: 2px;
    border: 1px solid transparent; border-bottom: none; color: {MUTED};
}}
QTabBar::tab:selected {{
    background: {PAPER}; border-color: {RULE}; color: {INK};
    border-top: 3px solid {BLUE};
}}
QTabBar::tab:hover:!selected {{ color: {INK}; }}
QTableView, QListWidget, QTextBrowser, QPlainTextEdit, QTreeView {{
    background: {PAPER}; border: 1px solid {RULE}; gridline-color: #ECEEF2;
    selection-background-color: #CFE3F3; selection-color: {INK};
    alternate-background-color: #F8F9FB;
}}
QHeaderView::section {{
    background: #EEF0F3; color: {MUTED}; border: none; border-right: 1px solid {RULE};
    border-bottom: 1px solid {RULE}; padding: 5px 8px; font-weight: bold;
}}
QPushButton {{
    background: {PAPER}; border: 1px solid #AEB5C0; border-radius: 4px; padding: 6px 14px;
}}
QPushButton:hover {{ border-color: {BLUE}; }}
QPushButton:focus {{ border: 2px solid {BLUE}; }}
QPushButton:disabled {{ color: #9AA1AB; border-color: {RULE}; }}
QPushButton[role="primary"] {{ background: {BLUE}; color: white; border-color: {BLUE}; font-weight: bold; }}
QPushButton[role="danger"] {{ background: {VERMILLION}; color: white; border-color: {VERMILLION}; font-weight: bold; }}
QPushButton[role="primary"]:disabled, QPushButton[role="danger"]:disabled {{
    background: #E4E7EC; color: #8A929E; border-color: {RULE};
}}
QLineEdit {{ background: {PAPER}; border: 1px solid #AEB5C0; border-radius: 3px; padding: 4px 6px; }}
QLineEdit:focus {{ border: 2px solid {BLUE}; }}
QToolBar {{ background: {PAPER}; border-bottom: 1px solid {RULE}; spacing: 6px; padding: 4px; }}
QToolButton {{ padding: 5px 9px; border-radius: 4px; }}
QToolButton:hover {{ background: #E8EEF6; }}
QToolButton:disabled {{ color: #9AA1AB; }}
QStatusBar {{ background: {PAPER}; border-top: 1px solid {RULE}; color: {MUTED}; }}
QDockWidget::title {{ background: #EEF0F3; padding: 6px; font-weight: bold; }}
QFrame[card="true"] {{ background: {PAPER}; border: 1px solid {RULE}; border-radius: 6px; }}
QFrame#deviceCard {{
    background: {PAPER}; border: 1px solid {RULE}; border-left: 6px solid #B8BEC8; border-radius: 6px;
}}
QFrame#deviceCard[tone="running"] {{ border-left-color: {BLUE}; }}
QFrame#deviceCard[tone="holding"] {{ border-left-color: {ORANGE}; }}
QFrame#deviceCard[tone="fault"] {{ border-left-color: {VERMILLION}; }}
QFrame#deviceCard[tone="paused"] {{ border-left-color: {SKY_BLUE}; }}
QFrame[alarmbox="active"] {{ background: #FBE3D6; border-radius: 4px; }}
QFrame[alarmbox="acknowledged"] {{ background: #FFF4D6; border-radius: 4px; }}
QLabel[error="true"] {{ color: {VERMILLION}; }}
QLabel[muted="true"] {{ color: {MUTED}; }}
QLabel[heading="true"] {{ font-size: 15pt; font-weight: bold; }}
QLabel[subheading="true"] {{ font-size: 11pt; font-weight: bold; }}
QGroupBox {{ border: 1px solid {RULE}; border-radius: 6px; margin-top: 14px; padding-top: 8px; background: {PAPER}; }}
QGroupBox::title {{ subcontrol-origin: margin; left: 10px; padding: 0 4px; color: {MUTED}; font-weight: bold; }}
"""


def apply(app: QApplication) -> None:
    """Fusion style, a readable sans-serif at 10 pt, light palette, the style sheet."""
    app.setStyle("Fusion")
    font = QFont("DejaVu Sans")
    font.setStyleHint(QFont.StyleHint.SansSerif)
    font.setPointSizeF(10.0)
    app.setFont(font)
    pal = app.palette()
    pal.setColor(QPalette.ColorRole.Window, QColor(CANVAS))
    pal.setColor(QPalette.ColorRole.Base, QColor(PAPER))
    pal.setColor(QPalette.ColorRole.Text, QColor(INK))
    pal.setColor(QPalette.ColorRole.WindowText, QColor(INK))
    pal.setColor(QPalette.ColorRole.Highlight, QColor("#CFE3F3"))
    pal.setColor(QPalette.ColorRole.HighlightedText, QColor(INK))
    app.setPalette(pal)
    app.setStyleSheet(STYLE_SHEET)
