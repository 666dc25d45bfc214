"""Word files (.docx): paragraphs and tables in body order (python-docx), headings kept as sections."""

from __future__ import annotations

import io
import re
import zipfile
from typing import Any

from qa.errors import DocumentError
from qa.loaders.base import Extracted, LoadOptions, Sections, TextBuilder, missing_package, size

__all__ = ["DOCXLoader"]

_HEADING = re.compile(r"Heading ([1-9])")
# A part packed tighter than this is a zip bomb, not a document: Word's XML deflates about 5-20:1.
_MAX_RATIO = 200
_RATIO_CHECKED_FROM = 1_000_000  # bytes unpacked; small parts may pack tighter harmlessly
_OLE = b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1"


def _check_archive(data: bytes, options: LoadOptions) -> None:
    """Refuse what is not a DOCX, and zip bombs, from the zip directory alone (nothing is unpacked yet).

    Python's zipfile never unpacks more than a member's declared size, so checking declared sizes bounds memory.
    """
    if data.startswith(_OLE):
        raise DocumentError("an encrypted Word file or a legacy .doc (OLE format): not supported, save it as .docx")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile as exc:
        raise DocumentError(f"not a readable DOCX (corrupt or truncated zip archive: {exc})") from exc
    with archive:
        members = archive.infolist()
        if "word/document.xml" not in {m.filename for m in members}:
            raise DocumentError("not a Word document (the zip archive has no word/document.xml)")
        unpacked = sum(m.file_size for m in members)
        if unpacked > options.max_unpacked_bytes:
            raise DocumentError(
                f"unpacks to {size(unpacked)}, over the {size(options.max_unpacked_bytes)} limit "
                "(Settings.max_unpacked_bytes): a zip bomb?"
            )
        for m in members:
            if m.file_size >= _RATIO_CHECKED_FROM and m.file_size > _MAX_RATIO * max(m.compress_size, 1):
                raise DocumentError(
                    f"{m.filename} is packed {m.file_size // max(m.compress_size, 1):,}:1 "
                    f"({size(m.file_size)} from {size(m.compress_size)}): a zip bomb?"
                )


def _heading_level(paragraph: Any) -> int | None:
    """0 for the Title style, N for "Heading N", None for body text."""
    try:
        style = paragraph.style
    except (KeyError, ValueError):  # a style id the styles part does not define
        return None
    name = getattr(style, "name", None) or ""
    if name == "Title":
        return 0
    match = _HEADING.fullmatch(name)
    return int(match.group(1)) if match else None


def _row_text(row: Any) -> str:
    """A table row as its cells' text joined by " | " (a merged cell once)."""
    cells: list[str] = []
    seen: set[int] = set()
    for cell in row.cells:
        if id(cell._tc) in seen:  # noqa: SLF001 - a merged cell repeats across the columns it spans
            continue
        seen.add(id(cell._tc))  # noqa: SLF001
        cells.append(" ".join(cell.text.split()))
    return " | ".join(cells)


class DOCXLoader:
    """Word (.docx): one block per paragraph and per table; Title and Heading N styles set the section."""

    kind = "DOCX"
    suffixes = (".docx",)

    def sniff(self, data: bytes) -> bool:
        """A zip archive holding word/document.xml."""
        return data.startswith(b"PK\x03\x04") and b"word/document.xml" in data

    def extract(self, data: bytes, options: LoadOptions) -> Extracted:
        """The body's paragraphs and tables in order; headers, footers and comments are left out."""
        try:
            import docx
            from docx.table import Table
        except ImportError as exc:
            raise missing_package("python-docx", self.kind) from exc
        _check_archive(data, options)
        document = docx.Document(io.BytesIO(data))
        builder = TextBuilder(options.max_document_chars)
        sections = Sections()
        for block in document.iter_inner_content():
            if isinstance(block, Table):
                builder.add("\n".join(_row_text(row) for row in block.rows), section=sections.path)
                continue
            level = _heading_level(block)
            if level is not None:
                sections.enter(level, block.text)
            builder.add(block.text, section=sections.path)
        if builder.empty:
            raise DocumentError("the document has no text")
        title = (document.core_properties.title or "").strip()
        return builder.build({"title": title} if title else None)
