"""HTML, PDF and DOCX files made by real tools, asked about through the real pipeline: citations name page and section."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from typing import Any

import pypdfium2
import pytest

import qa
from qa.loaders import LOADERS, Extracted, Loader, LoadOptions
from qa.testing import OpenAIServer

from .documents import (
    DOCX_CASUALTIES,
    DOCX_METHOD,
    DOCX_TITLE,
    FIELD_REPORT_HTML,
    FIELD_REPORT_PDF,
    HTML_FOOTER,
    HTML_NAV,
    HTML_RESULT,
    PDF_HYPHENATED,
    PDF_LEFT,
    PDF_NON_ASCII,
    PDF_PAGE3,
    PDF_RIGHT,
    html_page,
    make_docx,
    make_pdf,
)
from .test_cli import run_cli
from .test_pipeline import reply

NITRATE = "The mean nitrate concentration over all stations and visits was 1.9 milligrams per litre"
PHOSPHORUS = "Total phosphorus averaged 0.021 milligrams per litre before the storm of 11 April"


def folded(text: str) -> str:
    """Text as a reader compares it: PDFium's line-end hyphen marks dropped, whitespace folded."""
    return " ".join(text.replace("\ufffe", "").replace("\x02", "").split())


def page_text(path: Path, page: int) -> str:
    """One page's own text, read straight from PDFium (not through qa)."""
    pdf = pypdfium2.PdfDocument(str(path))
    try:
        return str(pdf[page - 1].get_textpage().get_text_range())
    finally:
        pdf.close()


def whole(settings: qa.Settings) -> qa.Settings:
    """Settings that send every document whole, so passage numbers follow document order."""
    return settings.model_copy(update={"max_context_tokens": None, "max_citations": 5})


def ask(server: OpenAIServer, settings: qa.Settings, paths: Any, quotes: list[tuple[int, str]]) -> qa.Answer[Any]:
    server.reply_json(reply(quotes, " ".join(q for _, q in quotes)))  # an answer its quotes state
    with qa.Index.from_paths(paths, whole(settings)) as index:
        answer = index.ask("What does the report say?")
        by_id = {d.id: d for d in index.documents}
    assert answer.found and answer.verified, answer
    for c in answer.citations:
        assert by_id[c.document_id].text[c.start : c.end] == c.quote
    server.assert_done()
    return answer


# --- PDF -------------------------------------------------------------------------------------


def test_pdf_citations_name_the_page_and_the_quote_is_on_it(server: OpenAIServer, settings: qa.Settings) -> None:
    # groff typeset this report: it hyphenated "sta-tions" inside NITRATE, and page 2 has two columns.
    answer = ask(server, settings, FIELD_REPORT_PDF, [(1, NITRATE), (1, PHOSPHORUS)])
    assert [(c.document_id, c.page, c.section) for c in answer.citations] == [
        ("field_report.pdf", 2, None), ("field_report.pdf", 2, None)
    ]  # fmt: skip
    for c in answer.citations:
        assert c.match == "exact"  # the hyphen groff added at the line end is not in the text
        assert folded(c.quote) in folded(page_text(FIELD_REPORT_PDF, c.page or 0))
        assert folded(c.quote) not in folded(page_text(FIELD_REPORT_PDF, 1) + page_text(FIELD_REPORT_PDF, 3))


def test_pdf_pages_columns_hyphens_and_non_ascii(tmp_path: Path) -> None:
    (doc,) = qa.load(make_pdf(tmp_path / "council.pdf"))
    assert doc.metadata["type"] == "PDF" and doc.metadata["pages"] == 3
    assert [(loc.page, loc.section) for loc in doc.locations] == [(1, None), (2, None), (3, None)]
    text = folded(doc.text)
    # A word split at a line end reads as one word; columns read left, then right; no character lost.
    assert PDF_HYPHENATED in text and "extraordi" + "-" not in text
    assert text.index(PDF_LEFT) < text.index(PDF_RIGHT)
    assert PDF_NON_ASCII in text
    for needle, page in ((PDF_HYPHENATED, 1), (PDF_LEFT, 2), (PDF_RIGHT, 2), (PDF_PAGE3, 3)):
        start = doc.text.index(needle.split()[0] + " " + needle.split()[1])
        location = doc.location_at(start)
        assert location is not None and location.page == page, needle
        assert folded(needle) in folded(page_text(tmp_path / "council.pdf", page))


def test_cli_prints_the_page_and_json_carries_it(server: OpenAIServer, tmp_path: Path) -> None:
    pdf = shutil.copy(FIELD_REPORT_PDF, tmp_path / "report.pdf")
    for _ in range(2):
        server.reply_json(reply([(1, NITRATE)], "1.9 mg/l"))
    done = run_cli(["ask", "What was the mean nitrate concentration?", str(pdf)], server)
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[1].startswith("  [1] report.pdf p. 2:")
    done = run_cli(["ask", "What was the mean nitrate concentration?", str(pdf), "--json"], server)
    (citation,) = json.loads(done.stdout)["citations"]
    assert (citation["page"], citation["section"], citation["quote"]) == (2, None, NITRATE)


# --- HTML ------------------------------------------------------------------------------------


def test_html_main_text_without_boilerplate_and_sections(
    server: OpenAIServer, settings: qa.Settings, tmp_path: Path
) -> None:
    page = tmp_path / "bridges.html"
    page.write_text(html_page(), encoding="utf-8")
    (doc,) = qa.load(page)
    assert HTML_RESULT in doc.text
    for boilerplate in (HTML_NAV, HTML_FOOTER, "Ten recipes for the summer"):
        assert boilerplate not in doc.text
    assert doc.metadata["title"] == "Bridge survey | Example News"
    answer = ask(server, settings, page, [(1, HTML_RESULT)])
    (c,) = answer.citations
    assert (c.page, c.section) == (None, "Bridge survey › Findings › Repairs")
    assert doc.text.startswith("Bridge survey\n\n")  # headings are kept as lines of the text


def test_html_in_a_legacy_encoding(tmp_path: Path) -> None:
    page = tmp_path / "latin.html"
    page.write_bytes(html_page().replace("utf-8", "iso-8859-1").replace("district", "Bezirk Zürich").encode("latin-1"))
    (doc,) = qa.load(page)
    assert "Bezirk Zürich" in doc.text and "Ã" not in doc.text


def test_html_from_groff_joins_source_line_breaks(server: OpenAIServer, settings: qa.Settings) -> None:
    # A browser shows the line breaks of the markup as spaces; so does the document text.
    answer = ask(server, settings, FIELD_REPORT_HTML, [(1, NITRATE)])
    (c,) = answer.citations
    assert c.quote == NITRATE and c.match == "exact"
    assert c.section == "Field report: water quality of the Aare, spring survey › 3. Results › 3.1. Nitrate"


# --- DOCX ------------------------------------------------------------------------------------


def test_docx_paragraphs_tables_and_heading_path(server: OpenAIServer, settings: qa.Settings, tmp_path: Path) -> None:
    path = make_docx(tmp_path / "annual.docx")
    (doc,) = qa.load(path)
    assert doc.metadata["type"] == "DOCX"
    assert "Region | Count\nKursk | 4,000" in doc.text
    answer = ask(server, settings, path, [(1, DOCX_CASUALTIES), (1, "Kursk | 4,000"), (1, DOCX_METHOD)])
    assert [c.section for c in answer.citations] == [
        f"{DOCX_TITLE} › Results › Casualties", f"{DOCX_TITLE} › Results › Casualties", f"{DOCX_TITLE} › Method"
    ]  # fmt: skip
    assert all(c.page is None for c in answer.citations)


# --- Markdown --------------------------------------------------------------------------------

MD_CASUALTIES = "Officials put the number of killed or wounded at 4,000 by the end of March."
MD_METHOD = "Every figure comes from the regional hospitals."
MARKDOWN = f"""Field notes, not yet reviewed.

# Kursk report

The report covers the winter.

## Results: *casualties*

{MD_CASUALTIES}

```python
# not a heading: inside a code block
print("4,000")
```

Method
------

{MD_METHOD}

### [Sources](https://example.org/sources)

Hospitals and officials.
"""


def test_markdown_headings_are_sections(server: OpenAIServer, settings: qa.Settings, tmp_path: Path) -> None:
    path = tmp_path / "notes.md"
    path.write_bytes(MARKDOWN.replace("\n", "\r\n").encode("utf-8"))  # Windows line ends: offsets still exact
    (doc,) = qa.load(path)
    assert doc.text == MARKDOWN.replace("\n", "\r\n") and doc.metadata["type"] == "Markdown"
    assert [(doc.text[loc.start : loc.start + 4], loc.section) for loc in doc.locations] == [
        ("# Ku", "Kursk report"), ("## R", "Kursk report › Results: casualties"), ("Meth", "Kursk report › Method"),
        ("### ", "Kursk report › Method › Sources"),
    ]  # fmt: skip
    assert doc.location_at(0) is None  # before the first heading
    answer = ask(server, settings, path, [(1, MD_CASUALTIES), (1, MD_METHOD)])
    assert [(c.page, c.section) for c in answer.citations] == [
        (None, "Kursk report › Results: casualties"), (None, "Kursk report › Method")
    ]  # fmt: skip
    assert str(answer).splitlines()[1].startswith("  [1] notes.md § Kursk report › Results: casualties:")


# --- a mixed folder --------------------------------------------------------------------------


def test_folder_of_mixed_reports(server: OpenAIServer, settings: qa.Settings, tmp_path: Path) -> None:
    make_docx(tmp_path / "a_annual.docx")
    (tmp_path / "b_bridges.html").write_text(html_page(), encoding="utf-8")
    make_pdf(tmp_path / "c_council.pdf")
    (tmp_path / "d_notes.txt").write_text("Plain notes: the depot count is due in May.\n", encoding="utf-8")
    answer = ask(
        server, settings, tmp_path,
        [(1, DOCX_CASUALTIES), (2, HTML_RESULT), (3, PDF_PAGE3), (4, "the depot count is due in May")],
    )  # fmt: skip
    assert [(c.document_id, c.page, c.section) for c in answer.citations] == [
        ("a_annual.docx", None, f"{DOCX_TITLE} › Results › Casualties"),
        ("b_bridges.html", None, "Bridge survey › Findings › Repairs"),
        ("c_council.pdf", 3, None),
        ("d_notes.txt", None, None),
    ]
    printed = str(answer).splitlines()
    assert printed[3].startswith("  [3] c_council.pdf p. 3:")
    assert printed[2].startswith("  [2] b_bridges.html § Bridge survey › Findings › Repairs:")
    assert printed[4].startswith("  [4] d_notes.txt:")


def test_files_without_suffix_are_sniffed(tmp_path: Path) -> None:
    shutil.copy(FIELD_REPORT_PDF, tmp_path / "report")
    shutil.copy(make_docx(tmp_path / "x.docx"), tmp_path / "annual")
    (tmp_path / "x.docx").unlink()
    (tmp_path / "page").write_text(html_page(), encoding="utf-8")
    (tmp_path / "README").write_text("Just some notes.\n", encoding="utf-8")
    docs = {d.id: d.metadata["type"] for d in qa.load(tmp_path)}
    assert docs == {"README": "text", "annual": "DOCX", "page": "HTML", "report": "PDF"}


# --- the location map ----------------------------------------------------------------------


def test_location_map() -> None:
    text = "first page\n\nsecond page\n\nthird"
    doc = qa.Document(
        text=text, id="d", locations=[qa.Location(0, 1), qa.Location(12, 2, "Intro"), qa.Location(25, 3)]
    )
    assert isinstance(doc.locations, tuple)
    assert [doc.location_at(i) for i in (0, 11, 12, 24, 25, len(text) - 1)] == [
        qa.Location(0, 1), qa.Location(0, 1), qa.Location(12, 2, "Intro"), qa.Location(12, 2, "Intro"),
        qa.Location(25, 3), qa.Location(25, 3),
    ]  # fmt: skip
    assert qa.Document(text="x").location_at(0) is None
    assert qa.Document(text=text, locations=[qa.Location(5, 2)]).location_at(2) is None
    with pytest.raises(qa.InputError, match="sorted"):
        qa.Document(text=text, locations=[qa.Location(12, 2), qa.Location(0, 1)])
    with pytest.raises(qa.InputError, match="within the text"):
        qa.Document(text=text, locations=[qa.Location(999, 2)])


def test_progress_bar_only_when_asked_or_on_a_terminal(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    for n in range(3):
        (tmp_path / f"{n}.txt").write_text(f"note {n}\n", encoding="utf-8")
    assert len(qa.load(tmp_path)) == 3  # stderr is not a terminal here
    assert capsys.readouterr().err == ""
    assert len(qa.load(tmp_path, progress=True)) == 3
    assert re.search(r"loading: .*0/3", capsys.readouterr().err)


class SheetLoader:
    """A loader of the caller's own, for a type qa does not read: it only has to fit the Loader protocol."""

    kind = "CSV"
    suffixes = (".csv",)

    def sniff(self, data: bytes) -> bool:
        return False

    def extract(self, data: bytes, options: LoadOptions) -> Extracted:
        rows = data.decode("utf-8").splitlines()
        text = "\n".join(rows)
        starts = [sum(len(r) + 1 for r in rows[:i]) for i in range(len(rows))]
        return Extracted(text, tuple(qa.Location(s, section=f"row {i}") for i, s in enumerate(starts, 1)))


def test_a_loader_of_your_own(tmp_path: Path) -> None:
    (tmp_path / "counts.csv").write_text("region,count\nKursk,4000\n", encoding="utf-8")
    with pytest.raises(qa.DocumentError, match="unsupported file type '.csv'"):
        qa.load(tmp_path / "counts.csv")
    loader: Loader = SheetLoader()
    (doc,) = qa.load(tmp_path / "counts.csv", loaders=(loader, *LOADERS))
    assert doc.metadata["type"] == "CSV"
    location = doc.location_at(doc.text.index("Kursk"))
    assert location is not None and location.section == "row 2"


def test_a_reopened_sqlite_index_still_cites_pages_and_sections(
    server: OpenAIServer, settings: qa.Settings, tmp_path: Path
) -> None:
    db = tmp_path / "reports.sqlite"
    with qa.Index.open(db, whole(settings)) as index:
        index.add([FIELD_REPORT_PDF, make_docx(tmp_path / "annual.docx")])
    server.reply_json(reply([(1, DOCX_CASUALTIES), (2, NITRATE)], f"{DOCX_CASUALTIES} {NITRATE}"))
    with qa.Index.open(db, whole(settings)) as reopened:
        answer = reopened.ask("What does the report say?")
    assert answer.found and answer.verified, answer
    assert [(c.document_id, c.page, c.section) for c in answer.citations] == [
        ("annual.docx", None, f"{DOCX_TITLE} › Results › Casualties"), ("field_report.pdf", 2, None)
    ]  # fmt: skip
