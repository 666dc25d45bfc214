"""The in-memory store: documents and chunks in dicts, BM25 by bm25s rebuilt on the first search after a change."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import numpy.typing as npt

from qa.chunking import Chunk
from qa.documents import Document
from qa.retrieval import BM25Retriever, Hit
from qa.store import Entry, Known, Source, StoredDocument, StoreStats, text_sha256

__all__ = ["MemoryStore"]


@dataclass(frozen=True, slots=True)
class _Item:
    stored: StoredDocument
    document: Document
    chunks: list[Chunk]


class MemoryStore:
    """A `Store` in this process's memory: what `qa.Index(documents)` uses; nothing outlives the process."""

    def __init__(self) -> None:
        self._items: dict[str, _Item] = {}
        self._meta: dict[str, str] = {}
        self._retriever: BM25Retriever | None = None
        self._vectors: dict[str, tuple[str, npt.NDArray[np.float16]]] = {}  # document -> (model, chunk vectors)
        self._lock = threading.Lock()

    @property
    def path(self) -> Path | None:
        return None

    def add(self, entries: Iterable[Entry]) -> None:
        items = []
        for e in entries:
            doc = e.document
            stored = StoredDocument(doc.id, len(doc.text), text_sha256(doc.text), len(e.chunks), doc.metadata, e.source)
            items.append(_Item(stored, doc, list(e.chunks)))
        with self._lock:
            for item in items:
                self._items.pop(item.stored.id, None)
                self._vectors.pop(item.stored.id, None)
                self._items[item.stored.id] = item
            if items:
                self._retriever = None

    def remove(self, ids: Iterable[str]) -> int:
        with self._lock:
            wanted = set(ids)
            removed = sum(self._items.pop(i, None) is not None for i in wanted)
            for i in wanted:
                self._vectors.pop(i, None)
            if removed:
                self._retriever = None
        return removed

    def set_source(self, document_id: str, source: Source) -> None:
        with self._lock:
            item = self._items[document_id]
            self._items[document_id] = _Item(replace(item.stored, source=source), item.document, item.chunks)

    def __len__(self) -> int:
        return len(self._items)

    def __iter__(self) -> Iterator[StoredDocument]:
        return iter([item.stored for item in self._items.values()])

    def known(self) -> Iterator[Known]:
        return iter([Known(i.stored.id, i.stored.sha256, i.stored.source) for i in self._items.values()])

    def get(self, document_id: str) -> StoredDocument | None:
        item = self._items.get(document_id)
        return item.stored if item is not None else None

    def text(self, document_id: str) -> str:
        return self._items[document_id].document.text

    def document(self, document_id: str) -> Document:
        return self._items[document_id].document

    def chunks(self, document_id: str) -> list[Chunk]:
        return list(self._items[document_id].chunks)

    def stats(self) -> StoreStats:
        items = list(self._items.values())
        return StoreStats(
            len(items), sum(len(i.chunks) for i in items), sum(c.tokens for i in items for c in i.chunks)
        )

    def retriever(self) -> BM25Retriever:
        """bm25s over every stored chunk, documents in the order they were added."""
        with self._lock:
            if self._retriever is None:
                self._retriever = BM25Retriever([c for item in self._items.values() for c in item.chunks])
            return self._retriever

    def search(self, query: str, k: int) -> list[Hit]:
        return self.retriever().search(query, k)

    def vector_documents(self, model: str) -> set[str]:
        return {doc for doc, (m, _) in self._vectors.items() if m == model}

    def vectors(self, model: str) -> dict[str, npt.NDArray[np.float32]]:
        return {doc: v.astype(np.float32) for doc, (m, v) in self._vectors.items() if m == model}

    def set_vectors(self, model: str, vectors: Mapping[str, npt.NDArray[np.floating]]) -> None:
        with self._lock:
            for doc, v in vectors.items():
                if doc not in self._items or len(v) != len(self._items[doc].chunks):
                    raise KeyError(f"{doc!r}: no stored document with {len(v)} chunks")
            self._vectors.update((doc, (model, np.asarray(v, dtype=np.float16))) for doc, v in vectors.items())

    def clear_vectors(self) -> None:
        with self._lock:
            self._vectors.clear()

    def get_meta(self, key: str) -> str | None:
        return self._meta.get(key)

    def set_meta(self, key: str, value: str) -> None:
        self._meta[key] = value

    def close(self) -> None:
        pass

