"""Files that cannot be read: each is a one-line DocumentError naming the file and the reason, and a folder
with bad files still yields the good ones."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

import qa
from qa.testing import OpenAIServer

from .documents import (
    FIELD_REPORT_PDF,
    PDF_PAGE3,
    html_page,
    make_docx,
    make_encrypted_pdf,
    make_pdf,
    make_scanned_pdf,
    zip_bomb_docx,
)
from .test_cli import run_cli
from .test_pipeline import reply


def fails(path: Path, pattern: str, settings: qa.Settings | None = None, **kwargs: str) -> qa.DocumentError:
    with pytest.raises(qa.DocumentError, match=pattern) as info:
        qa.load(path, settings or qa.Settings(), **kwargs)
    error = info.value
    assert error.path == str(path)
    message = str(error)
    assert message.startswith(f"{path}: ") and "\n" not in message
    return error


def test_encrypted_pdf_needs_its_password(tmp_path: Path) -> None:
    pdf = make_encrypted_pdf(tmp_path / "secret.pdf", "s3cret")
    fails(pdf, r"secret.pdf: the PDF is encrypted: give its password \(Settings.pdf_password")
    error = fails(pdf, "password given does not open it", password="wrong")
    assert "wrong" not in str(error)  # no secret in an error
    (doc,) = qa.load(pdf, password="s3cret")
    assert "3.2 million francs" in doc.text and doc.locations[0].page == 1
    (doc,) = qa.load(pdf, qa.Settings(pdf_password="s3cret"))
    assert "3.2 million francs" in doc.text
    assert qa.Settings.from_env({"QA_PDF_PASSWORD": "s3cret"}).pdf_password is not None
    assert "s3cret" not in repr(qa.Settings(pdf_password="s3cret"))


def test_pdf_without_a_text_layer(tmp_path: Path) -> None:
    fails(make_scanned_pdf(tmp_path / "scan.pdf"), r"no extractable text in 2 page\(s\) — scanned\? OCR is not supported")


def test_truncated_and_corrupt_pdf(tmp_path: Path) -> None:
    data = FIELD_REPORT_PDF.read_bytes()
    (tmp_path / "half.pdf").write_bytes(data[: len(data) // 2])
    fails(tmp_path / "half.pdf", r"not a readable PDF \(corrupt or truncated\?\): PDFium: Data format error$")
    (tmp_path / "fake.pdf").write_bytes(b"%PDF-1.7\nnot really a PDF at all\n")
    fails(tmp_path / "fake.pdf", "not a readable PDF")


def test_truncated_and_corrupt_docx(tmp_path: Path) -> None:
    data = make_docx(tmp_path / "good.docx").read_bytes()
    (tmp_path / "half.docx").write_bytes(data[: len(data) // 2])
    fails(tmp_path / "half.docx", r"not a readable DOCX \(corrupt or truncated zip archive")
    broken = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(broken, "w") as target:
        for item in source.infolist():
            body = source.read(item)
            target.writestr(item, body[: len(body) // 2] if item.filename == "word/document.xml" else body)
    (tmp_path / "broken.docx").write_bytes(broken.getvalue())
    fails(tmp_path / "broken.docx", r"cannot read this DOCX file \(XMLSyntaxError: ")
    (tmp_path / "sheet.docx").write_bytes(_zip({"xl/workbook.xml": b"<workbook/>"}))
    fails(tmp_path / "sheet.docx", r"not a Word document \(the zip archive has no word/document.xml\)")
    (tmp_path / "locked.docx").write_bytes(b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\x00" * 512)
    fails(tmp_path / "locked.docx", "an encrypted Word file or a legacy .doc")


def _zip(members: dict[str, bytes]) -> bytes:
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w") as archive:
        for name, data in members.items():
            archive.writestr(name, data)
    return out.getvalue()


def test_docx_zip_bomb_is_refused_from_the_directory(tmp_path: Path) -> None:
    bomb = zip_bomb_docx(tmp_path / "bomb.docx", unpacked_mb=60)
    assert bomb.stat().st_size < 200_000
    fails(bomb, r"word/document.xml is packed 1,0\d\d:1 \(62.9 MB from \d+.\d kB\): a zip bomb\?")
    # The total too, under a lower limit, for an ordinary document.
    docx = make_docx(tmp_path / "ordinary.docx")
    fails(
        docx, r"unpacks to \d+.\d kB, over the 1.0 kB limit \(Settings.max_unpacked_bytes\): a zip bomb\?$",
        qa.Settings(max_unpacked_bytes=1000),
    )


def test_html_nested_beyond_the_parser_limit(tmp_path: Path) -> None:
    page = tmp_path / "deep.html"
    page.write_text("<html><body>" + "<div>" * 100_000 + "<p>deep</p>" + "</div>" * 100_000 + "</body></html>")
    fails(page, r"HTML nested too deeply to read reliably \(libxml2: Excessive depth in document: 256")


def test_html_that_is_binary_or_has_no_main_text(tmp_path: Path) -> None:
    (tmp_path / "blob.html").write_bytes(b"<html>\x00\x01\x02" * 100)
    fails(tmp_path / "blob.html", r"looks like binary data \(contains NUL bytes\), not HTML")
    (tmp_path / "empty.html").write_text("<html><body><nav><a href='/'>Home</a></nav></body></html>")
    fails(tmp_path / "empty.html", "no main text found in the page")


def test_size_limits(tmp_path: Path) -> None:
    pdf = make_pdf(tmp_path / "council.pdf")
    size = pdf.stat().st_size
    fails(
        pdf, rf"file is {size / 1e3:.1f} kB, over the {(size - 1) / 1e3:.1f} kB limit \(Settings.max_file_bytes\)$",
        qa.Settings(max_file_bytes=size - 1),
    )
    assert qa.load(pdf, qa.Settings(max_file_bytes=size))
    fails(pdf, r"extracted text is over 100 characters \(Settings.max_document_chars\)", qa.Settings(max_document_chars=100))
    (tmp_path / "long.txt").write_text("word " * 100)
    fails(tmp_path / "long.txt", "text is over 100 characters", qa.Settings(max_document_chars=100))


def test_binary_files_with_a_text_suffix(tmp_path: Path) -> None:
    (tmp_path / "image.txt").write_bytes(b"\x89PNG\r\n\x1a\n" + bytes(range(256)))
    fails(tmp_path / "image.txt", "looks like a PNG image, not text")
    (tmp_path / "report.md").write_bytes(FIELD_REPORT_PDF.read_bytes())
    fails(tmp_path / "report.md", "looks like a PDF, not text")
    (tmp_path / "data.txt").write_bytes(b"abc\x00def")
    fails(tmp_path / "data.txt", r"looks like binary data \(contains NUL bytes\), not text")
    (tmp_path / "program").write_bytes(b"\x7fELF\x02\x01\x01\x00" + bytes(64))
    fails(tmp_path / "program", r"file type not recognised \(no suffix, and not text\)")


def test_folder_with_bad_files_collects_the_good_ones(tmp_path: Path) -> None:
    make_pdf(tmp_path / "a_good.pdf")
    make_docx(tmp_path / "b_good.docx")
    (tmp_path / "c_good.html").write_text(html_page(), encoding="utf-8")
    make_encrypted_pdf(tmp_path / "d_locked.pdf", "pw")
    make_scanned_pdf(tmp_path / "e_scan.pdf")
    zip_bomb_docx(tmp_path / "f_bomb.docx", unpacked_mb=8)
    (tmp_path / "g_image.txt").write_bytes(b"\x89PNG\r\n\x1a\n\x00")
    (tmp_path / "h_sheet.xlsx").write_bytes(b"PK\x03\x04")
    (tmp_path / ".hidden.txt").write_text("never loaded")
    (tmp_path / "z_good.txt").write_text("Some plain notes.\n")

    result = qa.load(tmp_path, errors="collect")
    assert [d.id for d in result.documents] == ["a_good.pdf", "b_good.docx", "c_good.html", "z_good.txt"]
    reasons = {Path(e.path or "").name: str(e).split(": ", 1)[1] for e in result.failed}
    assert sorted(reasons) == ["d_locked.pdf", "e_scan.pdf", "f_bomb.docx", "g_image.txt", "h_sheet.xlsx"]
    assert reasons["h_sheet.xlsx"].startswith("unsupported file type '.xlsx'")
    assert all(isinstance(e, qa.DocumentError) and "\n" not in str(e) for e in result.failed)

    # Streaming, as an index builds from it: the same, in file order.
    streamed = list(qa.iter_load(tmp_path))
    assert [getattr(x, "id", None) or Path(getattr(x, "path", "")).name for x in streamed] == [
        "a_good.pdf", "b_good.docx", "c_good.html", "d_locked.pdf", "e_scan.pdf", "f_bomb.docx", "g_image.txt",
        "h_sheet.xlsx", "z_good.txt",
    ]  # fmt: skip

    # errors="raise" (the default) stops at the first bad file; unsupported types in folders are skipped.
    with pytest.raises(qa.DocumentError, match="d_locked.pdf: the PDF is encrypted"):
        qa.load(tmp_path)
    with pytest.raises(qa.DocumentError, match="d_locked.pdf: the PDF is encrypted"):
        qa.Index.from_paths(tmp_path, qa.Settings(api_key="k"))


def test_collect_with_nothing_readable_raises(tmp_path: Path) -> None:
    make_scanned_pdf(tmp_path / "scan.pdf")
    with pytest.raises(qa.DocumentError, match="scan.pdf: no extractable text"):
        qa.load(tmp_path, errors="collect")
    (tmp_path / "z.txt").write_bytes(b"\x00")
    with pytest.raises(qa.DocumentError, match=r"no document could be read: 2 file\(s\) failed, the first: .*scan.pdf"):
        qa.load(tmp_path, errors="collect")
    with pytest.raises(qa.InputError, match="errors must be"):
        qa.load(tmp_path, errors="ignore")  # type: ignore[call-overload]


def test_duplicate_ids_across_folders(tmp_path: Path) -> None:
    for folder in ("one", "two"):
        (tmp_path / folder).mkdir()
        (tmp_path / folder / "notes.txt").write_text(f"notes of {folder}\n")
    with pytest.raises(qa.InputError, match="two documents share the id 'notes.txt'"):
        qa.load([tmp_path / "one", tmp_path / "two"])
    result = qa.load([tmp_path / "one", tmp_path / "two"], errors="collect")
    assert [d.text for d in result.documents] == ["notes of one\n"]
    assert [e.path for e in result.failed] == [str(tmp_path / "two" / "notes.txt")]


def test_missing_library_names_the_extra(tmp_path: Path) -> None:
    # A Python where pypdfium2 cannot be imported (None in sys.modules makes `import` fail), in a subprocess.
    code = (
        "import sys; sys.modules['pypdfium2'] = None; import qa\n"
        f"try: qa.load({str(FIELD_REPORT_PDF)!r})\n"
        "except qa.DocumentError as e: print(e)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip().endswith("reading PDF files needs pypdfium2: pip install 'qa[documents]'")


def test_cli_skips_bad_files_and_names_them_unless_strict(server: OpenAIServer, tmp_path: Path) -> None:
    make_pdf(tmp_path / "council.pdf")
    make_encrypted_pdf(tmp_path / "locked.pdf", "pw")
    server.reply_json(reply([(1, PDF_PAGE3)], "4,000"))
    done = run_cli(["ask", "How many casualties?", str(tmp_path)], server)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].startswith("  [1] council.pdf p. 3:")
    assert done.stderr.strip() == f"qa: skipped {tmp_path / 'locked.pdf'}: the PDF is encrypted: give its password " \
        "(Settings.pdf_password, env QA_PDF_PASSWORD)"
    done = run_cli(["ask", "How many casualties?", str(tmp_path), "--strict"], server)
    assert done.returncode == 1 and done.stderr.startswith(f"qa: error: {tmp_path / 'locked.pdf'}: the PDF is encrypted")
