"""Chunk vectors kept in a store: computed for the documents that have none, stored with them, searched in memory.

The store records which embedding model its vectors come from (meta key `embedding_model`): vectors of two models
are never mixed. Opening a store with another model logs a warning and embeds every chunk again with it.
"""

from __future__ import annotations

import logging
import threading

import numpy as np

from qa.chunking import Chunk
from qa.dense import DenseRetriever, HybridRetriever
from qa.embed.base import Embedder, Vectors, embed_in_batches
from qa.progress import Progress
from qa.retrieval import Retriever
from qa.store import Store

__all__ = ["StoreVectors"]

logger = logging.getLogger("qa")

_META_KEY = "embedding_model"
# Documents whose vectors are written in one transaction: a process stopped mid-way keeps what it had embedded.
_DOCUMENTS_PER_WRITE = 64


def _after(progress: Progress, before: int, total: int) -> Progress:
    """`progress` for one batch of texts: its count of texts follows the `before` embedded earlier."""
    return lambda done, _: progress(before + done, total)


class StoreVectors:
    """The vectors of every chunk of `store` by `embedder`, and a dense retriever over them."""

    def __init__(self, store: Store, embedder: Embedder, *, batch_size: int = 64) -> None:
        self.store = store
        self.embedder = embedder
        self.batch_size = batch_size
        self._dense: DenseRetriever | None = None
        self._hybrid: HybridRetriever | None = None
        self._lock = threading.Lock()

    def sync(self, progress: Progress | None = None) -> int:
        """Embed the chunks of the documents that have no vectors from this model (all of them after a model
        change) and store their vectors; how many chunks were embedded. `progress(done, total)` counts chunks
        (`(0, total)` first), and is not called when there is nothing to embed."""
        with self._lock:
            self._dense = self._hybrid = None
            model = self.embedder.model_id
            recorded = self.store.get_meta(_META_KEY)
            if recorded is not None and recorded != model:
                logger.warning(
                    "the index's vectors were made by %s, not %s: embedding every chunk again", recorded, model
                )
                self.store.clear_vectors()
            if recorded != model:
                self.store.set_meta(_META_KEY, model)
            have = self.store.vector_documents(model)
            stored = [d for d in self.store if d.id not in have]
            missing = [d.id for d in stored]
            total = sum(d.chunks for d in stored)
            if progress is not None and total:
                progress(0, total)
            embedded = 0
            for start in range(0, len(missing), _DOCUMENTS_PER_WRITE):
                ids = missing[start : start + _DOCUMENTS_PER_WRITE]
                chunks = {doc: self.store.chunks(doc) for doc in ids}
                texts = [c.text for doc in ids for c in chunks[doc]]
                report = None if progress is None else _after(progress, embedded, total)
                vectors = embed_in_batches(self.embedder, texts, batch_size=self.batch_size, progress=report)
                out: dict[str, Vectors] = {}
                at = 0
                for doc in ids:
                    out[doc] = vectors[at : at + len(chunks[doc])]
                    at += len(chunks[doc])
                self.store.set_vectors(model, out)
                embedded += len(texts)
            if embedded:
                logger.info("embedded %d chunks of %d documents with %s", embedded, len(missing), model)
            return embedded

    def retriever(self) -> DenseRetriever:
        """Exact search over every stored chunk's vector (loaded from the store once per change)."""
        with self._lock:
            if self._dense is None:
                model = self.embedder.model_id
                stored = self.store.vectors(model)
                chunks: list[Chunk] = []
                parts: list[Vectors] = []
                for document in self.store.known():
                    if document.id in stored:
                        chunks.extend(self.store.chunks(document.id))
                        parts.append(stored[document.id])
                matrix = np.concatenate(parts) if parts else np.zeros((0, 0), dtype=np.float32)
                self._dense = DenseRetriever(chunks, self.embedder, vectors=matrix)
            return self._dense

    def hybrid(self, lexical: Retriever) -> HybridRetriever:
        """The dense retriever fused with `lexical` (the store's BM25)."""
        dense = self.retriever()
        with self._lock:
            if self._hybrid is None or self._hybrid.dense is not dense or self._hybrid.lexical is not lexical:
                self._hybrid = HybridRetriever(lexical, dense)
            return self._hybrid
