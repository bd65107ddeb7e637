"""Write HTML as an A4 PDF with a footer on every page, with Qt's rich text (no browser).

The core reaches this through the ``render_pdf`` plugin entry point (labctl.plugins): it
never imports Qt. The HTML is what :func:`labctl.reports.batch.render_html` writes for
``medium="qt"`` (Qt's rich-text subset of HTML and CSS: tables whose ``thead`` rows repeat
on each page, ``page-break-before``, classes). Qt lays the document out page by page;
each page is drawn with the footer under it: the caller's text on the left, "page n of m"
on the right.

Outside the console there is no Qt application: one is made on the "offscreen" platform
(a PDF needs no display, and a display that cannot be reached would make Qt abort the
process instead of raising). Anything that stops Qt from starting or the file from being
written is one :class:`PdfError`.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from labctl.errors import LabctlError

__all__ = ["PdfError", "render_pdf"]

MARGINS_MM = (12.0, 14.0, 12.0, 10.0)  # left, top, right, bottom of the page
FOOTER_MM = 8.0  # the footer's band under the text, inside the bottom margin
RESOLUTION_DPI = 300
BODY_PT = 8.5  # the text's size; headings and tables scale from it (CSS in the HTML)
KEEP_MM = 30.0  # a heading with less room than this under it starts the next page

_app: Any = None  # the QGuiApplication made here, kept for the process's life


class PdfError(LabctlError):
    """The PDF could not be written: Qt cannot start here, or the file cannot be written."""

    code = 1300


def _qt_app() -> Any:
    """The running Qt application, or a new offscreen one (see the module text)."""
    global _app
    try:
        from PyQt6.QtGui import QGuiApplication
    except ImportError as exc:
        raise PdfError(
            f"cannot write a PDF: Qt cannot start here ({exc}); write the record as HTML "
            "(-o record.html) and print it from a browser"
        ) from exc
    app = QGuiApplication.instance()
    if app is not None:
        return app
    plugins = _platform_plugins()
    if plugins is not None and not any("offscreen" in p for p in plugins):
        raise PdfError(
            "cannot write a PDF: Qt's 'offscreen' platform plugin is not installed; write "
            "the record as HTML (-o record.html) and print it from a browser"
        )
    if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
        os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")
    _app = QGuiApplication(["labctl", "-platform", "offscreen"])
    return _app


def _platform_plugins() -> list[str] | None:
    """File names of Qt's platform plugins (None when their folder cannot be found)."""
    from PyQt6.QtCore import QLibraryInfo

    folder = Path(QLibraryInfo.path(QLibraryInfo.LibraryPath.PluginsPath)) / "platforms"
    try:
        return [p.name for p in folder.iterdir()]
    except OSError:
        return None


def render_pdf(html: str, path: str | Path, *, footer: str, title: str = "") -> int:
    """Write ``html`` to ``path`` as an A4 portrait PDF; returns the number of pages.

    ``footer``: the text at the foot of every page, left; "page n of m" goes right.
    The file is written whole under a temporary name, then renamed: a reader never
    finds half a PDF.
    """
    _qt_app()
    from PyQt6.QtCore import QMarginsF, QRectF, QSizeF, Qt
    from PyQt6.QtGui import (
        QFont,
        QPageLayout,
        QPageSize,
        QPainter,
        QPdfWriter,
        QTextDocument,
        QTextOption,
    )

    out = Path(path)
    tmp = out.with_name(out.name + ".part")
    try:
        # Qt only says "QPainter::begin(): Returned false" on stderr: find out first.
        tmp.open("wb").close()
    except OSError as exc:
        raise PdfError(f"cannot write {out}: {exc.strerror or exc}") from exc
    writer = QPdfWriter(str(tmp))
    writer.setResolution(RESOLUTION_DPI)
    writer.setPageSize(QPageSize(QPageSize.PageSizeId.A4))
    writer.setPageOrientation(QPageLayout.Orientation.Portrait)
    writer.setPageMargins(QMarginsF(*MARGINS_MM), QPageLayout.Unit.Millimeter)
    writer.setTitle(title)
    writer.setCreator("labctl")

    doc = QTextDocument()
    doc.setMetaInformation(QTextDocument.MetaInformation.CssMedia, "print")
    option = doc.defaultTextOption()
    # A word wider than its column (a 64-digit hash, a long step list) is broken rather
    # than clipped at the page's edge; the HTML gives table columns their widths.
    option.setWrapMode(QTextOption.WrapMode.WrapAtWordBoundaryOrAnywhere)
    doc.setDefaultTextOption(option)
    font = QFont("DejaVu Sans")
    font.setPointSizeF(BODY_PT)
    doc.setDefaultFont(font)
    layout = doc.documentLayout()
    if layout is None:
        raise PdfError("cannot write a PDF: Qt gave the document no layout")
    layout.setPaintDevice(writer)  # measure text at the PDF's resolution
    doc.setHtml(html)

    area = writer.pageLayout().paintRectPixels(RESOLUTION_DPI)
    footer_px = FOOTER_MM / 25.4 * RESOLUTION_DPI
    body = QSizeF(area.width(), area.height() - footer_px)
    doc.setPageSize(body)
    _keep_headings_with_next(doc, layout, body.height(), KEEP_MM / 25.4 * RESOLUTION_DPI)
    pages = doc.pageCount()

    painter = QPainter()
    if not painter.begin(writer):
        tmp.unlink(missing_ok=True)
        raise PdfError(f"cannot write {out}: Qt could not open it for drawing")
    try:
        small = QFont("DejaVu Sans")
        small.setPointSizeF(7.0)
        band = QRectF(0, body.height() + footer_px * 0.25, body.width(), footer_px * 0.75)
        for n in range(pages):
            if n:
                writer.newPage()
            painter.save()
            painter.translate(0, -n * body.height())
            doc.drawContents(painter, QRectF(0, n * body.height(), body.width(), body.height()))
            painter.restore()
            painter.setFont(small)
            painter.drawLine(band.topLeft(), band.topRight())
            painter.drawText(
                band, Qt.AlignmentFlag.AlignLeft | Qt.AlignmentFlag.AlignBottom, footer
            )
            painter.drawText(
                band,
                Qt.AlignmentFlag.AlignRight | Qt.AlignmentFlag.AlignBottom,
                f"page {n + 1} of {pages}",
            )
    finally:
        painter.end()
    try:
        tmp.replace(out)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise PdfError(f"cannot write {out}: {exc.strerror or exc}") from exc
    return pages


def _keep_headings_with_next(doc: Any, layout: Any, page_h: float, room: float) -> None:
    """Move each heading (h1-h3) that lands near the foot of a page to the next page, with
    what follows it: Qt's rich text has no ``break-after: avoid``."""
    from PyQt6.QtGui import QTextCursor, QTextFormat

    block = doc.begin()
    while block.isValid():
        fmt = block.blockFormat()
        if 0 < fmt.headingLevel() <= 3:
            rect = layout.blockBoundingRect(block)  # lays the document out up to here
            page_end = (int(rect.top() // page_h) + 1) * page_h
            if page_end - rect.bottom() < room and rect.top() % page_h > 1:
                fmt.setPageBreakPolicy(QTextFormat.PageBreakFlag.PageBreak_AlwaysBefore)
                QTextCursor(block).setBlockFormat(fmt)
        block = block.next()
