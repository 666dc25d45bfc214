"""The `Embedder` protocol every embedding backend implements, and what they share."""

from __future__ import annotations

import logging
import time
import threading
from collections import OrderedDict
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

import numpy as np
import numpy.typing as npt

__all__ = ["Embedder", "EmbeddingUsage", "QueryCache", "Vectors", "embed_in_batches", "normalize"]

logger = logging.getLogger("qa")

Vectors = npt.NDArray[np.float32]
"""A (n, dimension) float32 array, one L2-normalised row per text."""


@runtime_checkable
class Embedder(Protocol):
    """Turns texts into vectors whose dot products rank passages for a query."""

    @property
    def model_id(self) -> str:
        """Names the vector space: vectors of two different ids must never be compared."""
        ...

    @property
    def dimension(self) -> int:
        """Length of each vector."""
        ...

    def embed_passages(self, texts: Sequence[str]) -> Vectors:
        """One L2-normalised vector per passage, in order."""
        ...

    def embed_query(self, text: str) -> Vectors:
        """The L2-normalised vector of a question, shape (dimension,)."""
        ...


@dataclass(slots=True)
class EmbeddingUsage:
    """What embedding cost: texts embedded, tokens billed (remote), HTTP calls and retries."""

    texts: int = 0
    tokens: int = 0
    calls: int = 0
    retries: int = 0


def normalize(vectors: npt.NDArray[np.floating] | Sequence[Sequence[float]]) -> Vectors:
    """Rows scaled to unit length (a zero row stays zero), as float32."""
    array = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(array, axis=-1, keepdims=True)
    result: Vectors = array / np.maximum(norms, np.float32(1e-12))
    return result


def embed_in_batches(
    embedder: Embedder,
    texts: Sequence[str],
    *,
    batch_size: int,
    progress: Callable[[int, int], None] | None = None,
) -> Vectors:
    """`embedder.embed_passages` over `texts` in batches of `batch_size`, logging progress every few seconds
    (and calling `progress(done, total)` after each batch)."""
    parts: list[Vectors] = []
    started = last_log = time.monotonic()
    for start in range(0, len(texts), batch_size):
        batch = texts[start : start + batch_size]
        parts.append(np.asarray(embedder.embed_passages(batch), dtype=np.float32))
        done = start + len(batch)
        if progress is not None:
            progress(done, len(texts))
        now = time.monotonic()
        if now - last_log >= 5.0 or (done == len(texts) and now - started >= 5.0):
            last_log = now
            logger.info(
                "embedded %d/%d passages with %s (%.1f/s)", done, len(texts), embedder.model_id,
                done / max(now - started, 1e-9),
            )  # fmt: skip
    if not parts:
        return np.zeros((0, embedder.dimension), dtype=np.float32)
    return np.concatenate(parts)


class QueryCache:
    """The vectors of the last `size` questions: retrieval and the evidence step embed the same question."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._vectors: OrderedDict[str, Vectors] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, text: str, embed: Callable[[str], Vectors]) -> Vectors:
        """The cached vector of `text`, or `embed(text)` remembered."""
        if self.size <= 0:
            return embed(text)
        with self._lock:
            if (vector := self._vectors.get(text)) is not None:
                self._vectors.move_to_end(text)
                return vector
        vector = embed(text)
        with self._lock:
            self._vectors[text] = vector
            while len(self._vectors) > self.size:
                self._vectors.popitem(last=False)
        return vector
