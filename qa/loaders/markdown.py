"""Markdown files: the file's characters as they are (like text), with the heading path (`#`, `##`, ... and
underlined headings, as markdown-it-py reads CommonMark) as the section of each stretch."""

from __future__ import annotations

import logging
import re
from typing import Any

from qa.documents import Location
from qa.loaders.base import Extracted, LoadOptions, Sections
from qa.loaders.text import TextLoader

__all__ = ["MarkdownLoader"]

logger = logging.getLogger("qa")

# Line ends as markdown-it-py counts lines (it reads \r\n and a lone \r as one line end each).
_LINE_END = re.compile(r"\r\n|\r|\n")


def _heading_text(inline: Any) -> str:
    """A heading's words without Markdown markup: emphasis marks and link targets left out."""
    parts = [child.content for child in inline.children or () if child.type in ("text", "code_inline")]
    return "".join(parts) if parts else str(inline.content)


class MarkdownLoader:
    """Markdown (.md): the text exactly as in the file; headings make the section path of what follows them."""

    kind = "Markdown"
    suffixes = (".md", ".markdown")

    def sniff(self, data: bytes) -> bool:
        """A file without a suffix is read as plain text, not guessed to be Markdown."""
        return False

    def extract(self, data: bytes, options: LoadOptions) -> Extracted:
        """The file decoded as UTF-8, and a Location at each heading."""
        text = TextLoader().extract(data, options).text
        try:
            from markdown_it import MarkdownIt
        except ImportError:  # Markdown was read as text before the documents extra: still readable, without sections
            logger.debug("markdown-it-py is not installed: Markdown files are read without sections")
            return Extracted(text)
        tokens = MarkdownIt("commonmark").parse(text)
        line_starts = [0, *(m.end() for m in _LINE_END.finditer(text))]
        sections = Sections()
        locations: list[Location] = []
        for at, token in enumerate(tokens):
            if token.type != "heading_open" or token.map is None:
                continue
            sections.enter(int(token.tag[1:]), _heading_text(tokens[at + 1]))
            start = line_starts[min(token.map[0], len(line_starts) - 1)]
            if locations and locations[-1].start == start:
                locations.pop()
            locations.append(Location(start, section=sections.path))
        return Extracted(text, tuple(locations))
