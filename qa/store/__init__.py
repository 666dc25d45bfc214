"""Where an index keeps its documents, their chunks and its term index: the `Store` protocol and its backends.

    Store                  the protocol every backend implements (tests/test_store.py runs against each)
    ├── MemoryStore        in this process only; what `qa.Index(documents)` uses (BM25 by bm25s)
    └── SQLiteStore        one SQLite file (WAL, numbered migrations); what `qa.Index.open(path)` uses (BM25 by tantivy)

A store is written one batch of whole documents at a time: each `add` or `remove` is one transaction, so a
reader (or a process killed while writing) sees every document whole, or not at all.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from qa.chunking import Chunk
from qa.documents import Document
from qa.retrieval import Hit

__all__ = ["Entry", "Known", "Source", "Store", "StoreStats", "StoredDocument", "documents_of", "open_store", "text_sha256"]


@dataclass(frozen=True, slots=True)
class Source:
    """The file a document was read from, as seen when it was read (for change detection)."""

    path: str  # absolute
    size: int
    mtime_ns: int


@dataclass(frozen=True, slots=True)
class StoredDocument:
    """A stored document without its text: what iterating over a store yields."""

    id: str
    length: int  # characters of text
    sha256: str  # of the text, UTF-8
    chunks: int
    metadata: Mapping[str, Any] = field(default_factory=dict)
    source: Source | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "metadata", MappingProxyType(dict(self.metadata)))


@dataclass(frozen=True, slots=True)
class Known:
    """What deciding whether a file changed needs of a stored document: its id, its text's sha256, its file."""

    id: str
    sha256: str
    source: Source | None = None


@dataclass(frozen=True, slots=True)
class StoreStats:
    """Counts over a whole store."""

    documents: int
    chunks: int
    chunk_tokens: int


@dataclass(frozen=True, slots=True)
class Entry:
    """One document to add: its text, its chunks (offsets into the text) and where it came from."""

    document: Document
    chunks: Sequence[Chunk]
    source: Source | None = None


class Store(Protocol):
    """Documents, their chunks and a term index over the chunks, written a batch of whole documents at a time.

    A store is also a `qa.Retriever`: `search` ranks its chunks with BM25."""

    @property
    def path(self) -> Path | None:
        """The file the store lives in, or None in memory."""
        ...

    def add(self, entries: Iterable[Entry]) -> None:
        """Add the documents in one transaction, replacing stored ones with the same id."""
        ...

    def remove(self, ids: Iterable[str]) -> int:
        """Remove these documents (unknown ids are ignored) in one transaction; how many were removed."""
        ...

    def set_source(self, document_id: str, source: Source) -> None:
        """Record that a stored document's file was seen unchanged with this size and time."""
        ...

    def __len__(self) -> int:
        """How many documents are stored."""
        ...

    def __iter__(self) -> Iterator[StoredDocument]:
        """Every stored document, oldest first, without loading the texts."""
        ...

    def known(self) -> Iterator[Known]:
        """Every stored document's id, text sha256 and file, oldest first: one cheap pass (no metadata, no
        texts), for change detection over a large index."""
        ...

    def get(self, document_id: str) -> StoredDocument | None:
        """The stored document with this id, without its text, or None."""
        ...

    def text(self, document_id: str) -> str:
        """The text of a stored document (KeyError if there is none)."""
        ...

    def document(self, document_id: str) -> Document:
        """A stored document whole: text, metadata and locations (KeyError if there is none)."""
        ...

    def chunks(self, document_id: str) -> list[Chunk]:
        """The chunks of a stored document in order (KeyError if there is none)."""
        ...

    def stats(self) -> StoreStats:
        """How many documents, chunks and chunk tokens are stored."""
        ...

    def search(self, query: str, k: int) -> list[Hit]:
        """The best `k` chunks for `query` by BM25, best first, only those that match at all."""
        ...

    def vector_documents(self, model: str) -> set[str]:
        """The ids of the documents whose chunk vectors from embedding model `model` are stored."""
        ...

    def vectors(self, model: str) -> dict[str, npt.NDArray[np.float32]]:
        """Each document's chunk vectors from `model`: one row per chunk, in chunk order."""
        ...

    def set_vectors(self, model: str, vectors: Mapping[str, npt.NDArray[np.floating]]) -> None:
        """Store the chunk vectors of these documents (replacing theirs) in one transaction, as float16; they go
        when their document is replaced or removed."""
        ...

    def clear_vectors(self) -> None:
        """Remove every stored vector (of every model)."""
        ...

    def get_meta(self, key: str) -> str | None:
        """A value recorded with the store (e.g. the chunking settings its chunks were made with)."""
        ...

    def set_meta(self, key: str, value: str) -> None:
        """Record a value with the store."""
        ...

    def close(self) -> None:
        """Release the store's resources; it cannot be used afterwards."""
        ...


def text_sha256(text: str) -> str:
    """The hex sha256 of a text's UTF-8 bytes (lone surrogates kept, as `Document` ids do)."""
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def documents_of(store: Store, ids: Iterable[str] | None = None) -> Iterator[Document]:
    """The stored documents as `Document`s, texts loaded one at a time."""
    for stored in store if ids is None else filter(None, map(store.get, ids)):
        yield store.document(stored.id)


def open_store(path: str | Path | None = None) -> Store:
    """An SQLite store in the file at `path` (created when missing), or a new in-memory store for None."""
    if path is None:
        from qa.store.memory import MemoryStore

        return MemoryStore()
    from qa.store.sqlite import SQLiteStore

    return SQLiteStore(path)
