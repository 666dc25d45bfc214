"""Saved web pages: the main text without navigation and boilerplate (trafilatura), headings kept as sections."""

from __future__ import annotations

import re
from typing import Any, Literal

from qa.errors import DocumentError
from qa.loaders.base import Extracted, LoadOptions, Sections, TextBuilder, missing_package, one_line

__all__ = ["HTMLLoader"]

_HEADING_LEVEL = re.compile(r"h([1-6])")
_WHITESPACE = re.compile(r"\s+")
_SNIFF = re.compile(rb"^\s*(?:<\?xml[^>]*>\s*)?(?:<!--.*?-->\s*)*<(?:!doctype\s+html|html|head|body)\b", re.I | re.S)


def _collapse_whitespace(element: Any) -> None:
    """Line breaks and runs of spaces in the markup as one space, as a browser shows them (code kept as is);
    <br> stays a line break."""
    for node in element.iter():
        if node.tag == "code" or any(a.tag == "code" for a in node.iterancestors()):
            continue
        if node.text:
            node.text = _WHITESPACE.sub(" ", node.text)
        if node.tail and node is not element:
            node.tail = _WHITESPACE.sub(" ", node.tail)


class HTMLLoader:
    """HTML (.html, .htm): trafilatura's main-text extraction; h1-h6 become the section path."""

    kind = "HTML"
    suffixes = (".html", ".htm", ".xhtml")

    def __init__(self, favor: Literal["balanced", "recall", "precision"] = "recall") -> None:
        # trafilatura's balance between keeping main text and leaving boilerplate out. On 300 pages of its
        # evaluation set, recall kept 0.4 points less main text and 0.4 points more boilerplate than balanced
        # (benchmarks/RESULTS.md), but balanced drops every heading of simply built pages (groff's, in tests/data),
        # and with them the sections citations name.
        self.favor = favor

    def sniff(self, data: bytes) -> bool:
        """A file that starts like an HTML page."""
        return _SNIFF.match(data[:4096]) is not None

    def extract(self, data: bytes, options: LoadOptions) -> Extracted:
        """The page's main text, one block per paragraph, list item, table row group or heading."""
        try:
            import lxml.html
            import trafilatura
            from trafilatura.utils import decode_file
            from trafilatura.xml import xmltotxt
        except ImportError as exc:
            raise missing_package("trafilatura", self.kind) from exc
        markup = decode_file(data, options.max_unpacked_bytes)  # gzip/brotli/zstd undone, bounded
        if "\x00" in markup[:8192]:
            raise DocumentError("looks like binary data (contains NUL bytes), not HTML")
        # Parsed here rather than inside trafilatura, to see libxml2's own limits being hit.
        parser = lxml.html.HTMLParser(
            encoding="utf-8", collect_ids=False, default_doctype=False, remove_comments=True, remove_pis=True
        )  # utf-8: what the markup was decoded to and encoded in, whatever its <meta charset> says
        try:
            tree = lxml.html.document_fromstring(markup.encode("utf-8", "surrogatepass"), parser=parser)
        except (ValueError, lxml.etree.ParserError) as exc:
            raise DocumentError(f"not readable as HTML: {one_line(str(exc))}") from exc
        for entry in parser.error_log:
            if entry.type_name == "ERR_RESOURCE_LIMIT":
                raise DocumentError(
                    f"HTML nested too deeply to read reliably (libxml2: {one_line(entry.message)})"
                )
        title = one_line(tree.findtext(".//title") or "") or None
        result: Any = trafilatura.bare_extraction(
            tree, include_comments=False, include_tables=True, include_formatting=False,
            favor_recall=self.favor == "recall", favor_precision=self.favor == "precision",
        )  # fmt: skip
        body = None if result is None else result.body
        builder = TextBuilder(options.max_document_chars)
        sections = Sections()
        for element in body if body is not None else ():
            _collapse_whitespace(element)
            text = xmltotxt(element, include_formatting=False)
            if element.tag == "head":
                level = _HEADING_LEVEL.fullmatch(element.get("rend") or "")
                # A heading's first line names the section (some pages put links after it inside the heading).
                sections.enter(int(level.group(1)) if level else 6, text.strip().split("\n", 1)[0])
            builder.add(text, section=sections.path)
        if builder.empty:
            raise DocumentError("no main text found in the page")
        return builder.build({"title": title} if title else None)
