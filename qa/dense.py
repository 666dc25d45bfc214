"""Retrieval by meaning: nearest-neighbour search over chunk vectors, and its fusion with BM25.

Up to `EXACT_LIMIT` chunks, search is one float32 matrix-vector product over every chunk vector (BLAS), then a
partial sort. That product reads every vector from memory (1.5 KB per chunk of 384 dimensions, 154 MB at 100,000
chunks), and memory bandwidth, not arithmetic, sets its time: ~32 ms at 100,000 chunks on the project's 2-core VM.
Past `EXACT_LIMIT`, each chunk also has a 1-bit code of its vector (the sign of each dimension after subtracting the
corpus mean: 48 bytes a chunk); the Hamming distance between codes picks a shortlist (`SHORTLIST` chunks, or 20 per
hit asked for), and the shortlist is ranked by exact cosine similarity. On the multi-hop benchmark at 100,000 chunks
its top 50 held 99.3% of the exact top 50, and every hybrid top 5 was the exact one (benchmarks/RESULTS.md). Memory and time still grow linearly; past a few
million chunks an approximate index (HNSW, or a vector database) should take over.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
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
# Chunks up to which every vector is compared with the question's (exact search); above, binary codes pick a
# shortlist first. At 20,000 chunks the full product takes ~6 ms on 2 cores.
EXACT_LIMIT = 20_000
# Chunks the binary codes shortlist for exact ranking (at least 20 per hit asked for).
SHORTLIST = 1024
_SHORTLIST_PER_HIT = 20

Positions = npt.NDArray[np.intp]


def _top(scores: npt.NDArray[np.float32], k: int) -> npt.NDArray[np.intp]:
    """Indices of the `k` highest scores, best first (ties: lower index first)."""
    if k >= scores.size:
        candidates = np.arange(scores.size)
    else:
        candidates = np.argpartition(-scores, k - 1)[:k]
    return candidates[np.lexsort((candidates, -scores[candidates]))][:k]


class DenseRetriever:
    """Chunks ranked by the cosine similarity of their vectors to the question's: exact up to `exact_limit`
    chunks, above it exact over a shortlist picked by binary codes (see the module docstring)."""

    def __init__(
        self,
        chunks: Sequence[Chunk],
        embedder: Embedder,
        *,
        vectors: Vectors | None = None,
        batch_size: int = 64,
        exact_limit: int = EXACT_LIMIT,
        shortlist: int = SHORTLIST,
    ) -> None:
        self.chunks = list(chunks)
        self.embedder = embedder
        if vectors is None:
            vectors = embed_in_batches(embedder, [c.text for c in self.chunks], batch_size=batch_size)
        if vectors.shape[0] != len(self.chunks):
            raise ValueError(f"{vectors.shape[0]} vectors for {len(self.chunks)} chunks")
        # Built once, here (a retriever lives until the vectors change): float32 for the BLAS product, normalised
        # again in case they were stored at lower precision.
        self.vectors: Vectors = normalize(vectors) if len(self.chunks) else np.zeros((0, 0), dtype=np.float32)
        self.shortlist = shortlist
        self._center: Vectors | None = None
        self._codes: npt.NDArray[np.uint64] | None = None
        if len(self.chunks) > exact_limit:
            self._center = self.vectors.mean(axis=0)
            self._codes = self._code(self.vectors - self._center)

    @staticmethod
    def _code(centered: npt.NDArray[np.float32]) -> npt.NDArray[np.uint64]:
        """Sign bits of each row, packed into 64-bit words (rows padded with zero bits)."""
        bits = np.packbits(np.atleast_2d(centered) > 0, axis=1)
        pad = -bits.shape[1] % 8
        if pad:
            bits = np.pad(bits, ((0, 0), (0, pad)))
        codes: npt.NDArray[np.uint64] = np.ascontiguousarray(bits).view(np.uint64)
        return codes

    def scores(self, query: str) -> npt.NDArray[np.float32]:
        """The cosine similarity of every chunk to `query`, in chunk order (always exact: every vector is read)."""
        if not self.chunks:
            return np.zeros(0, dtype=np.float32)
        result: npt.NDArray[np.float32] = self.vectors @ self.embedder.embed_query(query)
        return result

    def similarity(self, vector: Vectors, positions: Sequence[int] | Positions) -> npt.NDArray[np.float32]:
        """The exact cosine similarity of the chunks at `positions` to a query `vector`."""
        result: npt.NDArray[np.float32] = self.vectors[np.asarray(positions, dtype=np.intp)] @ vector
        return result

    def nearest(self, vector: Vectors, k: int) -> tuple[Positions, npt.NDArray[np.float32]]:
        """Positions of the `k` chunks nearest to a query `vector`, best first, and their cosine similarities."""
        if not self.chunks or k <= 0:
            return np.zeros(0, dtype=np.intp), np.zeros(0, dtype=np.float32)
        if self._codes is None or self._center is None:
            scores: npt.NDArray[np.float32] = self.vectors @ vector
            top = _top(scores, k)
            return top, scores[top]
        n = min(len(self.chunks), max(self.shortlist, _SHORTLIST_PER_HIT * k))
        distance = np.bitwise_count(self._codes ^ self._code(vector - self._center)).sum(axis=1, dtype=np.int32)
        candidates = np.argpartition(distance, n - 1)[:n] if n < len(self.chunks) else np.arange(len(self.chunks))
        candidates.sort()  # rows read in memory order; ties then break by position, as in exact search
        exact = self.similarity(vector, candidates)
        best = _top(exact, k)
        return candidates[best], exact[best]

    def search(self, query: str, k: int) -> list[Hit]:
        """The `k` chunks nearest to `query`, best first."""
        if not self.chunks or k <= 0:
            return []
        top, scores = self.nearest(self.embedder.embed_query(query), k)
        return [Hit(self.chunks[i], float(s)) for i, s in zip(top.tolist(), scores.tolist(), strict=True)]


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
        vector = self.dense.embedder.embed_query(query)
        top, top_scores = self.dense.nearest(vector, n)
        return self._fuse(self.lexical.search(query, n), top, top_scores, lambda p: self.dense.similarity(vector, p), k)

    def fuse(self, lexical: Sequence[Hit], scores: npt.NDArray[np.float32], k: int) -> list[Hit]:
        """The best `k` of the lexical hits and the chunks with the best dense `scores` (every chunk's, exact)."""
        top = _top(scores, max(self.candidates, k)) if len(self.dense.chunks) else np.zeros(0, dtype=np.intp)
        return self._fuse(lexical, top, scores[top], lambda p: scores[np.asarray(p, dtype=np.intp)], k)

    def _fuse(
        self,
        lexical: Sequence[Hit],
        top: Positions,
        top_scores: npt.NDArray[np.float32],
        dense_at: Callable[[list[int]], npt.NDArray[np.float32]],
        k: int,
    ) -> list[Hit]:
        """Fuse the lexical hits with the dense ranking `top` (positions, best first, with `top_scores`);
        `dense_at(positions)` gives the dense score of any chunk (weighted fusion needs the lexical hits' too)."""
        chunks = self.dense.chunks
        n = max(self.candidates, k)
        if self.fusion == "rrf":
            by_meaning = [Hit(chunks[i], float(s)) for i, s in zip(top.tolist(), top_scores.tolist(), strict=True)]
            return reciprocal_rank_fusion([lexical[:n], by_meaning], self.rrf_k)[:k]
        ranked = top.tolist()
        lexical_score = {self._position[(h.chunk.document_id, h.chunk.index)]: h.score for h in lexical[:n]}
        positions = list(dict.fromkeys([*ranked, *lexical_score]))
        known = dict(zip(ranked, top_scores.tolist(), strict=True))
        others = [i for i in positions if i not in known]
        if others:
            known.update(zip(others, dense_at(others).tolist(), strict=True))
        return weighted_fusion(
            [chunks[i] for i in positions],
            np.asarray([lexical_score.get(i, 0.0) for i in positions], dtype=np.float32),
            np.asarray([known[i] for i in positions], dtype=np.float32),
            self.weight,
        )[:k]
