"""Documents and loading them from files, with clear errors for what cannot be read."""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any

from qa.errors import DocumentError, InputError

__all__ = ["SUPPORTED_SUFFIXES", "Document", "load"]

SUPPORTED_SUFFIXES = (".txt", ".md", ".markdown", ".text")
_BINARY_SNIFF_BYTES = 8192


@dataclass(frozen=True, slots=True)
class Document:
    """A text to answer from; citations index into `text`."""

    text: str
    id: str = ""
    metadata: Mapping[str, Any] = field(default_factory=dict)

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


def _load_file(path: Path, doc_id: str) -> Document:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        raise DocumentError(
            f"{path}: unsupported file type {suffix or '(no suffix)'!r}; supported: {', '.join(SUPPORTED_SUFFIXES)}",
            path=str(path),
        )
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DocumentError(f"{path}: cannot read file: {exc.strerror or exc}", path=str(path)) from exc
    if b"\x00" in data[:_BINARY_SNIFF_BYTES]:
        raise DocumentError(f"{path}: looks like a binary file (contains NUL bytes), not text", path=str(path))
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DocumentError(
            f"{path}: not valid UTF-8 (byte {exc.start}: {data[exc.start:exc.start + 1]!r}); convert it to UTF-8",
            path=str(path),
        ) from exc
    if not text.strip():
        raise DocumentError(f"{path}: file is empty", path=str(path))
    return Document(text=text, id=doc_id, metadata={"path": str(path)})


def load(paths: str | Path | Iterable[str | Path]) -> list[Document]:
    """Load .txt/.md files (a directory loads the supported files below it) as Documents."""
    items = [paths] if isinstance(paths, (str, Path)) else list(paths)
    if not items:
        raise InputError("no paths given")
    documents: list[Document] = []
    for item in items:
        path = Path(item)
        if not path.exists():
            raise DocumentError(f"{path}: no such file or directory", path=str(path))
        if path.is_dir():
            found = sorted(p for p in path.rglob("*") if p.is_file() and p.suffix.lower() in SUPPORTED_SUFFIXES)
            if not found:
                raise DocumentError(
                    f"{path}: directory has no {', '.join(SUPPORTED_SUFFIXES)} files to load", path=str(path)
                )
            documents.extend(_load_file(p, p.relative_to(path).as_posix()) for p in found)
        else:
            documents.append(_load_file(path, path.name))
    seen: set[str] = set()
    for doc in documents:
        if doc.id in seen:
            raise InputError(f"two documents share the id {doc.id!r}; give them distinct names")
        seen.add(doc.id)
    return documents
