"""Real files for the loader tests, made by the real tools: fpdf2 (PDF), python-docx (DOCX), and HTML pages."""

from __future__ import annotations

import io
import zipfile
from pathlib import Path

import docx
from fpdf import FPDF
from fpdf.enums import EncryptionMethod

DATA = Path(__file__).resolve().parent / "data"
# groff's output for tests/data/field_report.ms: three pages, a two-column page, words hyphenated by groff.
FIELD_REPORT_PDF = DATA / "field_report.pdf"
FIELD_REPORT_HTML = DATA / "field_report.html"

PDF_HYPHENATED = "The extraordinary session of the council lasted four hours."
PDF_LEFT = "Left column: the northern depot held 1,250 tonnes of grain at the end of the winter."
PDF_RIGHT = "Right column: the southern depot was empty after the floods of February."
PDF_PAGE3 = "Casualties were estimated at 4,000 by the regional officials in Kursk."
PDF_NON_ASCII = "Café crème and naïve façades in Zürich cost 12 francs each."


def make_pdf(path: Path) -> Path:
    """Three pages: a word hyphenated at a line end (page 1), two columns (page 2), non-ASCII text (page 3)."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 7, "Quarterly report of the council", new_x="LMARGIN", new_y="NEXT")
    pdf.multi_cell(
        0, 7, "The council met twice in the quarter.\nThe extraordi-\nnary session of the council lasted four hours.",
        new_x="LMARGIN", new_y="NEXT",
    )  # fmt: skip
    pdf.add_page()
    with pdf.text_columns(ncols=2, gutter=10) as columns:
        columns.write(PDF_LEFT + " " + "The grain was counted by hand in March. " * 12)
        columns.new_column()
        columns.write(PDF_RIGHT + " " + "The roof of the southern depot is to be repaired. " * 8)
    pdf.add_page()
    pdf.multi_cell(0, 7, PDF_PAGE3, new_x="LMARGIN", new_y="NEXT")
    pdf.multi_cell(0, 7, PDF_NON_ASCII, new_x="LMARGIN", new_y="NEXT")
    pdf.output(str(path))
    return path


def make_encrypted_pdf(path: Path, password: str) -> Path:
    """One page of text, readable only with `password`."""
    pdf = FPDF()
    pdf.set_font("helvetica", size=12)
    pdf.add_page()
    pdf.multi_cell(0, 7, "The secret budget was 3.2 million francs.")
    pdf.set_encryption(owner_password="owner-" + password, user_password=password, encryption_method=EncryptionMethod.RC4)
    pdf.output(str(path))
    return path


def make_scanned_pdf(path: Path) -> Path:
    """Two pages with drawings and no text layer, like a scan."""
    pdf = FPDF()
    for _ in range(2):
        pdf.add_page()
        pdf.rect(20, 20, 100, 60, style="F")
        pdf.line(20, 100, 180, 200)
    pdf.output(str(path))
    return path


DOCX_TITLE = "Annual report 2026"
DOCX_CASUALTIES = "Casualties were heavy on both sides, with 4,000 killed or wounded according to officials."
DOCX_METHOD = "We counted every report received before the end of November."


def make_docx(path: Path) -> Path:
    """Title, headings on two levels, body paragraphs and a table, with non-ASCII text."""
    d = docx.Document()
    d.add_heading(DOCX_TITLE, 0)
    d.add_paragraph("This report summarises the year for the board in Zürich.")
    d.add_heading("Results", 1)
    d.add_paragraph("The results are given by region.")
    d.add_heading("Casualties", 2)
    d.add_paragraph(DOCX_CASUALTIES)
    table = d.add_table(rows=2, cols=2)
    for (r, c), text in {(0, 0): "Region", (0, 1): "Count", (1, 0): "Kursk", (1, 1): "4,000"}.items():
        table.cell(r, c).text = text
    d.add_heading("Method", 1)
    d.add_paragraph(DOCX_METHOD)
    d.save(str(path))
    return path


HTML_RESULT = (
    "The inspection found that 37 of the 120 bridges in the district need repairs within two years, "
    "most of them because of corroded steel in the bearings."
)
HTML_NAV = "Home | News | Sport | Weather | Subscribe to our newsletter"
HTML_FOOTER = "Copyright 2026 Example Media Group. All rights reserved. Privacy policy. Cookie settings."


def html_page() -> str:
    """A news page with navigation, a sidebar, a footer and an article with h1-h3 headings."""
    para = (
        "<p>The district council published the report on Monday after a two-year survey of every bridge, "
        "culvert and footbridge maintained by the district and its municipalities.</p>"
    )
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>Bridge survey | Example News</title></head>
<body>
<header><nav><ul><li><a href="/">Home</a></li><li><a href="/news">News</a></li><li><a href="/sport">Sport</a></li>
<li><a href="/weather">Weather</a></li></ul><p>{HTML_NAV}</p></nav></header>
<aside class="sidebar"><h3>Most read</h3><ul><li><a href="/a">Ten recipes for the summer</a></li>
<li><a href="/b">Local team wins the cup</a></li></ul></aside>
<main><article>
<h1>Bridge survey</h1>
{para}
<h2>Findings</h2>
<p>Engineers inspected each structure twice, once in winter and once in summer, and rated its condition
on a scale from one to six.</p>
<h3>Repairs</h3>
<p>{HTML_RESULT}</p>
<p>Three footbridges were closed at once.</p>
<h2>Costs</h2>
<p>The council estimates the repairs at 48 million francs over five years, shared between the district and the
municipalities according to the usual key.</p>
</article></main>
<footer><p>{HTML_FOOTER}</p><ul><li><a href="/imprint">Imprint</a></li><li><a href="/jobs">Jobs</a></li></ul></footer>
</body></html>
"""


def zip_bomb_docx(path: Path, unpacked_mb: int = 60) -> Path:
    """A DOCX whose document.xml unpacks to `unpacked_mb` MB from a few kB: packed about 1000:1."""
    source = io.BytesIO()
    docx.Document().save(source)
    with zipfile.ZipFile(source) as original, zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as bomb:
        for item in original.infolist():
            if item.filename != "word/document.xml":
                bomb.writestr(item, original.read(item))
        with bomb.open("word/document.xml", "w", force_zip64=True) as member:
            member.write(b'<?xml version="1.0"?><w:document xmlns:w="x">')
            block = b" " * (1 << 20)
            for _ in range(unpacked_mb):
                member.write(block)
            member.write(b"</w:document>")
    return path
