"""The loader seam: what a loader is given, what it returns, and the text builder every loader shares."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from qa.documents import SECTION_SEPARATOR, Location
from qa.errors import DocumentError

__all__ = ["EXTRA", "Extracted", "LoadOptions", "Loader", "Sections", "TextBuilder", "missing_package", "one_line", "size"]

# The extra that installs the HTML, PDF and DOCX libraries.
EXTRA = "documents"


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """The limits and secrets a loader works under (from Settings)."""

    max_document_chars: int = 50_000_000
    max_unpacked_bytes: int = 256_000_000
    password: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class Extracted:
    """A file's canonical text, where its parts sit in the original, and facts about the file."""

    text: str
    locations: tuple[Location, ...] = ()
    metadata: Mapping[str, Any] = field(default_factory=dict)


class Loader(Protocol):
    """Reads one kind of file: chosen by `suffixes`, or by `sniff` for a file without a suffix."""

    @property
    def kind(self) -> str:
        """The file type as users name it ("PDF"), for messages."""
        ...

    @property
    def suffixes(self) -> tuple[str, ...]:
        """Lower-case file suffixes this loader reads, with the dot."""
        ...

    def sniff(self, data: bytes) -> bool:
        """Whether `data` (a whole file without a suffix) is this loader's kind."""
        ...

    def extract(self, data: bytes, options: LoadOptions) -> Extracted:
        """The file's text and locations; raises DocumentError (without the path) when it cannot."""
        ...


def missing_package(package: str, kind: str) -> DocumentError:
    """The error for a loader whose library is not installed: it names the extra that installs it."""
    return DocumentError(f"reading {kind} files needs {package}: pip install 'qa[{EXTRA}]'")


def size(n: float) -> str:
    """A byte count as people read it: "1.2 MB", "56.0 kB", "800 bytes"."""
    if n >= 1e6:
        return f"{n / 1e6:,.1f} MB"
    return f"{n / 1e3:,.1f} kB" if n >= 1e3 else f"{n:,.0f} bytes"


def one_line(text: str) -> str:
    """`text` on one line (third-party messages may span several)."""
    return " ".join(text.split())


class Sections:
    """The heading path at the current point of a document, as headings of levels 0 (title) to 9 arrive."""

    def __init__(self) -> None:
        self._open: list[tuple[int, str]] = []

    def enter(self, level: int, heading: str) -> None:
        """A heading of `level` starts a section; deeper or equal open sections end."""
        while self._open and self._open[-1][0] >= level:
            self._open.pop()
        heading = one_line(heading)
        if heading:
            self._open.append((level, heading))

    @property
    def path(self) -> str | None:
        """"Results › Casualties", or None before the first heading."""
        return SECTION_SEPARATOR.join(h for _, h in self._open) or None


class TextBuilder:
    """Joins a document's blocks with blank lines and records a Location wherever page or section changes."""

    def __init__(self, max_chars: int) -> None:
        self._parts: list[str] = []
        self._length = 0
        self._max_chars = max_chars
        self._locations: list[Location] = []

    def add(self, block: str, *, page: int | None = None, section: str | None = None) -> None:
        """Append a paragraph-like block (blank blocks are dropped; runs of spaces inside lines are kept)."""
        block = block.strip()
        if not block:
            return
        if self._parts:
            self._parts.append("\n\n")
            self._length += 2
        last = self._locations[-1] if self._locations else None
        if (page is not None or section is not None) and (last is None or (last.page, last.section) != (page, section)):
            self._locations.append(Location(self._length, page, section))
        self._parts.append(block)
        self._length += len(block)
        if self._length > self._max_chars:
            raise DocumentError(
                f"extracted text is over {self._max_chars:,} characters (Settings.max_document_chars)"
            )

    @property
    def empty(self) -> bool:
        """Whether no text was added."""
        return not self._parts

    def build(self, metadata: Mapping[str, Any] | None = None) -> Extracted:
        """The text and locations so far."""
        return Extracted("".join(self._parts), tuple(self._locations), dict(metadata or {}))
