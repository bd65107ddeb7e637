"""labctl report RUN -o record.pdf: the batch record as an A4 PDF (the console's Qt writer,
reached through the render_pdf plugin), with the footer on every page."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest

from labctl import accounts
from labctl.cli.main import main
from tests.helpers import sign_in
from tests.test_report import signed_run

# A4 at 72 points per inch: 595 x 842.
A4_POINTS = (595, 842)


@pytest.fixture(autouse=True)
def _cheap_passwords(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(accounts, "_SCRYPT_N", 2**8)


def page_objects(data: bytes) -> int:
    """Page objects in a PDF file (``/Type /Page``, not the ``/Type /Pages`` tree)."""
    return len(re.findall(rb"/Type\s*/Page(?![A-Za-z])", data))


def test_report_writes_an_a4_pdf_with_the_footer_on_every_page(
    qapp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:  # noqa: ANN001
    from PyQt6.QtCore import QSize
    from PyQt6.QtPdf import QPdfDocument

    r = signed_run(tmp_path)
    db = tmp_path / "run.db"
    sign_in(db, monkeypatch)  # a supervisor's CLI session on the same database
    out = tmp_path / "record.pdf"
    assert main(["report", str(r.world.run_id), "-o", str(out), "--db", str(db)]) == 0
    said = re.search(r"\((\d+) pages\)", capsys.readouterr().out)
    assert said is not None
    pages = int(said.group(1))

    data = out.read_bytes()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")
    # Page breaks before the tasks and the protocol text: at least three pages.
    assert page_objects(data) == pages >= 3
    assert not (tmp_path / "record.pdf.part").exists()

    doc = QPdfDocument(None)
    assert doc.load(str(out)) == QPdfDocument.Error.None_
    assert doc.pageCount() == pages
    size = doc.pagePointSize(0)
    assert (round(size.width()), round(size.height())) == A4_POINTS  # A4 portrait
    head = r.world.store.head()
    assert head is not None
    for n in range(pages):
        text = doc.getAllText(n).text()
        assert f"page {n + 1} of {pages}" in text, n
        assert f"Run {r.world.run_id}" in text and head[1][:12] in text, n
    titles = {"Run and protocol", "Signatures", "Deviations", "Prompts", "QC values",
              "Where each plate is", "Reagent lots", "Alarms", "Audit trail"}  # fmt: skip
    for n in range(pages):
        lines = [x.strip() for x in doc.getAllText(n).text().splitlines() if x.strip()]
        body = [x for x in lines if not x.startswith(f"Run {r.world.run_id} ·")]
        body = [x for x in body if not re.fullmatch(r"page \d+ of \d+", x)]
        assert body[-1] not in titles, (n, body[-3:])  # no heading left at a page's foot
    first = doc.getAllText(0).text()
    assert "Batch record: test" in first and "Sue Smith (sue)" in first
    assert r.world.store.get_run(r.world.run_id).protocol_sha256 in first.replace("\n", "")

    # The first page as a picture (kept in tmp_path, to be looked at): dark text on a
    # page QtPdf leaves transparent where nothing is drawn.
    image = doc.render(0, QSize(620, 877))
    image.save(str(tmp_path / "record-page1.png"))
    samples = [
        image.pixelColor(x, y)
        for y in range(0, image.height(), 4)
        for x in range(0, image.width(), 4)
    ]
    dark = sum(1 for c in samples if c.alpha() > 128 and c.lightness() < 128)
    assert 200 < dark < len(samples) // 4
    doc.close()


def test_the_format_comes_from_the_extension_or_the_option(
    qapp, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:  # noqa: ANN001
    r = signed_run(tmp_path)
    db = tmp_path / "run.db"
    sign_in(db, monkeypatch)
    run = str(r.world.run_id)
    assert main(["report", run, "-o", str(tmp_path / "r.html"), "--db", str(db)]) == 0
    assert (tmp_path / "r.html").read_text(encoding="utf-8").startswith("<!doctype html>")
    assert (
        main(["report", run, "-o", str(tmp_path / "r.out"), "--format", "pdf", "--db", str(db)])
        == 0
    )
    assert (tmp_path / "r.out").read_bytes().startswith(b"%PDF-")


def test_when_qt_cannot_start_one_clear_error_and_exit_1(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    r = signed_run(tmp_path)
    db = tmp_path / "run.db"
    sign_in(db, monkeypatch)
    monkeypatch.setitem(sys.modules, "PyQt6.QtGui", None)  # import PyQt6.QtGui fails
    out = tmp_path / "record.pdf"
    assert main(["report", str(r.world.run_id), "-o", str(out), "--db", str(db)]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "cannot write a PDF: Qt cannot start here" in err[0]
    assert "-o record.html" in err[0] and "Traceback" not in err[0]
    assert not out.exists()
