"""Retrieval by meaning: exact nearest-neighbour search over chunk vectors, and its fusion with BM25.

Exact search is one float32 matrix-vector product over every chunk vector (BLAS), then a partial sort: about
150 MB of memory and a few milliseconds per question at 100,000 chunks of 384 dimensions. Past a few million
chunks, memory and time grow linearly, and an approximate index (HNSW, or a vector database) should take over.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np
import numpy.typing as npt

from qa.chunking import Chunk
from qa.embed.base import Embedder, Vectors, embed_in_batches, normalize
from qa.retrieval import Hit, Retriever

__all__ = ["DenseRetriever", "Fusion", "HybridRetriever", "reciprocal_rank_fusion", "weighted_fusion"]

Fusion = Literal["rrf", "weighted"]

# Reciprocal rank fusion's constant (Cormack et al. 2009): a chunk at rank r of one list gains 1 / (K + r).
RRF_K = 60
# The dense score's share in weighted fusion: best mean of recall@5 and @20 on the dev half of
# benchmarks/retrieval_dense.py (0.3-0.8 tried; see benchmarks/RESULTS.md).
DENSE_WEIGHT = 0.7
# Hits asked of each retriever before fusing: a chunk that one list ranks low can still win on the other.
_CANDIDATES = 50


def _top(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    """Indices of the `k` highest scores, best first (ties: lower index first)."""
    if k >= scores.size:
        candidates = np.arange(scores.size)
    else:
        candidates = np.argpartition(-scores, k - 1)[:k]
    return candidates[np.lexsort((candidates, -scores[candidates]))][:k]


class DenseRetriever:
    """Chunks ranked by the cosine similarity of their vectors to the question's (exact search)."""

    def __init__(
        self,
        chunks: Sequence[Chunk],
        embedder: Embedder,
        *,
        vectors: Vectors | None = None,
        batch_size: int = 64,
    ) -> None:
        self.chunks = list(chunks)
        self.embedder = embedder
        if vectors is None:
            vectors = embed_in_batches(embedder, [c.text for c in self.chunks], batch_size=batch_size)
        if vectors.shape[0] != len(self.chunks):
            raise ValueError(f"{vectors.shape[0]} vectors for {len(self.chunks)} chunks")
        # float32 for the BLAS product; normalised again in case they were stored at lower precision.
        self.vectors: Vectors = normalize(vectors) if len(self.chunks) else np.zeros((0, 0), dtype=np.float32)

    def scores(self, query: str) -> npt.NDArray[np.float32]:
        """The cosine similarity of every chunk to `query`, in chunk order."""
        if not self.chunks:
            return np.zeros(0, dtype=np.float32)
        result: npt.NDArray[np.float32] = self.vectors @ self.embedder.embed_query(query)
        return result

    def search(self, query: str, k: int) -> list[Hit]:
        """The `k` chunks nearest to `query`, best first."""
        if not self.chunks or k <= 0:
            return []
        scores = self.scores(query)
        return [Hit(self.chunks[i], float(scores[i])) for i in _top(scores, k).tolist()]


def reciprocal_rank_fusion(rankings: Sequence[Sequence[Hit]], k: int = RRF_K) -> list[Hit]:
    """Hits of several rankings fused by reciprocal rank (sum of 1 / (k + rank)), best first; each hit's score
    is its fused score. Chunks are identified by (document, index); ties keep first-seen order."""
    fused: dict[tuple[str, int], float] = {}
    chunks: dict[tuple[str, int], Chunk] = {}
    for ranking in rankings:
        for rank, hit in enumerate(ranking, 1):
            key = (hit.chunk.document_id, hit.chunk.index)
            chunks.setdefault(key, hit.chunk)
            fused[key] = fused.get(key, 0.0) + 1.0 / (k + rank)
    order = sorted(fused, key=lambda key: -fused[key])
    return [Hit(chunks[key], fused[key]) for key in order]


def weighted_fusion(
    chunks: Sequence[Chunk], lexical: npt.NDArray[np.float32], dense: npt.NDArray[np.float32], weight: float
) -> list[Hit]:
    """`chunks` ranked by `weight` × dense score + (1 - `weight`) × lexical score, best first, each kind of score
    scaled to [0, 1] over the candidates (lexical by its best score, dense between its lowest and best)."""
    if not len(chunks):
        return []
    lexical_scaled = lexical / (lexical.max() or 1.0)
    span = float(dense.max() - dense.min()) or 1.0
    fused = weight * (dense - dense.min()) / span + (1 - weight) * lexical_scaled
    order = np.lexsort((np.arange(len(chunks)), -fused))
    return [Hit(chunks[i], float(fused[i])) for i in order.tolist()]


class HybridRetriever:
    """BM25 and dense retrieval fused: by default a weighted sum of their scaled scores over their top candidates
    (dense weight 0.7, chosen on the dev half of the multi-hop benchmark, where it beat reciprocal rank fusion),
    or reciprocal rank fusion (`fusion="rrf"`)."""

    def __init__(
        self,
        lexical: Retriever,
        dense: DenseRetriever,
        *,
        fusion: Fusion = "weighted",
        weight: float = DENSE_WEIGHT,
        rrf_k: int = RRF_K,
        candidates: int = _CANDIDATES,
    ) -> None:
        self.lexical = lexical
        self.dense = dense
        self.fusion: Fusion = fusion
        self.weight = weight
        self.rrf_k = rrf_k
        self.candidates = candidates
        self._position = {(c.document_id, c.index): i for i, c in enumerate(dense.chunks)}

    def search(self, query: str, k: int) -> list[Hit]:
        """The best `k` chunks for `query` by words and meaning together."""
        if k <= 0:
            return []
        n = max(self.candidates, k)
        return self.fuse(self.lexical.search(query, n), self.dense.scores(query), k)

    def fuse(self, lexical: Sequence[Hit], scores: npt.NDArray[np.float32], k: int) -> list[Hit]:
        """The best `k` of the lexical hits and the chunks with the best dense `scores` (every chunk's)."""
        chunks = self.dense.chunks
        n = max(self.candidates, k)
        top = _top(scores, n).tolist() if len(chunks) else []
        if self.fusion == "rrf":
            by_meaning = [Hit(chunks[i], float(scores[i])) for i in top]
            return reciprocal_rank_fusion([lexical[:n], by_meaning], self.rrf_k)[:k]
        positions = list(dict.fromkeys([*top, *(self._position[(h.chunk.document_id, h.chunk.index)] for h in lexical[:n])]))
        lexical_score = {self._position[(h.chunk.document_id, h.chunk.index)]: h.score for h in lexical[:n]}
        return weighted_fusion(
            [chunks[i] for i in positions],
            np.asarray([lexical_score.get(i, 0.0) for i in positions], dtype=np.float32),
            scores[positions],
            self.weight,
        )[:k]

