"""Documents: one canonical text each, and where each stretch of it sits in the original file."""

from __future__ import annotations

import bisect
import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from qa.errors import InputError

__all__ = ["SECTION_SEPARATOR", "Document", "Location", "load"]

# Joins a heading path: "Results › Casualties".
SECTION_SEPARATOR = " › "


@dataclass(frozen=True, slots=True)
class Location:
    """From text offset `start` on (until the next Location), the text is on `page` and under the heading path `section`."""

    start: int
    page: int | None = None
    section: str | None = None


@dataclass(frozen=True, slots=True)
class Document:
    """A text to answer from; citations index into `text`, and `locations` maps its offsets to pages and sections."""

    text: str
    id: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)
    locations: tuple[Location, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.text, str):
            raise InputError(f"Document text must be str, got {type(self.text).__name__}")
        if not self.text.strip():
            name = f" {self.id!r}" if self.id else ""
            raise InputError(f"document{name} is empty")
        if not self.id:
            digest = hashlib.sha256(self.text.encode("utf-8", "surrogatepass")).hexdigest()[:12]
            object.__setattr__(self, "id", f"doc-{digest}")
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))
        locations = tuple(self.locations)
        starts = [loc.start for loc in locations]
        if starts != sorted(starts) or (starts and not 0 <= starts[0] <= starts[-1] <= len(self.text)):
            raise InputError(f"document {self.id!r}: locations must be sorted by start and lie within the text")
        object.__setattr__(self, "locations", locations)

    def location_at(self, offset: int) -> Location | None:
        """The location of the character at `offset`: the last Location starting at or before it, if any."""
        i = bisect.bisect_right(self.locations, offset, key=lambda loc: loc.start)
        return self.locations[i - 1] if i else None


def load(paths: str | Path | Iterable[str | Path]) -> list[Document]:
    """Load files and folders as Documents: `qa.loaders.load` (also `qa.load`) with its defaults, kept here for
    code that imported it from this module."""
    from qa.loaders import load as load_files  # qa.loaders builds on this module

    return load_files(paths)
