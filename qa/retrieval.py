"""BM25 retrieval over chunks (bm25s), and filling a prompt's token budget with the best passages."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import bm25s
import Stemmer
from bm25s.tokenization import Tokenizer

from qa.chunking import Chunk

__all__ = ["BM25Retriever", "Hit", "Passage", "Retriever", "select_passages"]


@dataclass(frozen=True, slots=True)
class Hit:
    """A chunk and its retrieval score."""

    chunk: Chunk
    score: float


class Retriever(Protocol):
    """Ranks chunks for a query."""

    def search(self, query: str, k: int) -> list[Hit]:
        """The best `k` chunks for `query`, best first, only those that match at all."""
        ...


class BM25Retriever:
    """BM25 (Lucene variant, English stop words, Snowball stemming) over a fixed list of chunks."""

    def __init__(self, chunks: Sequence[Chunk]) -> None:
        self.chunks = list(chunks)
        self._tokenizer = Tokenizer(stopwords="en", stemmer=Stemmer.Stemmer("english"))
        self._bm25 = bm25s.BM25()
        if self.chunks:
            ids = self._tokenizer.tokenize(
                [c.text for c in self.chunks], return_as="ids", show_progress=False
            )
            self._bm25.index(ids, show_progress=False)

    def search(self, query: str, k: int) -> list[Hit]:
        """The best `k` chunks for `query`, best first, only those with a positive score."""
        if not self.chunks or k <= 0:
            return []
        ids = self._tokenizer.tokenize([query], update_vocab=False, return_as="ids", show_progress=False)
        k = min(k, len(self.chunks))
        docs, scores = self._bm25.retrieve(ids, k=k, show_progress=False, n_threads=1)
        return [
            Hit(self.chunks[int(d)], float(s)) for d, s in zip(docs[0], scores[0], strict=True) if float(s) > 0.0
        ]


@dataclass(frozen=True, slots=True)
class Passage:
    """A span of one document shown to the model under a number; one or more adjacent chunks."""

    number: int
    document_id: str
    start: int
    end: int
    text: str
    tokens: int
    chunks: tuple[Chunk, ...]


def _merge(chunks: list[Chunk], text_of: dict[str, str]) -> tuple[str, int, int, str, int, tuple[Chunk, ...]]:
    first = chunks[0]
    start, end = first.start, max(c.end for c in chunks)
    text = text_of[first.document_id][start:end]
    tokens = sum(c.tokens for c in chunks)
    return first.document_id, start, end, text, tokens, tuple(chunks)


def select_passages(
    question: str,
    chunks_by_document: dict[str, list[Chunk]],
    texts: dict[str, str],
    retriever: Retriever,
    *,
    budget_tokens: int,
    top_k: int,
) -> list[Passage]:
    """The passages to show for `question` within `budget_tokens`: every document whole when all fit,
    else the best BM25 hits that fit, adjacent hits of a document merged into one passage."""
    all_tokens = sum(c.tokens for chunks in chunks_by_document.values() for c in chunks)
    groups: list[list[Chunk]]
    if all_tokens <= budget_tokens:
        groups = [chunks for chunks in chunks_by_document.values() if chunks]
    else:
        chosen: list[Chunk] = []
        used = 0
        for hit in retriever.search(question, top_k):
            if used + hit.chunk.tokens <= budget_tokens:
                chosen.append(hit.chunk)
                used += hit.chunk.tokens
        # Keep rank order between passages, but join chunks of one document that touch or overlap.
        rank = {(c.document_id, c.index): r for r, c in enumerate(chosen)}
        ordered = sorted(chosen, key=lambda c: (c.document_id, c.index))
        groups = []
        for c in ordered:
            if groups and groups[-1][-1].document_id == c.document_id and groups[-1][-1].end >= c.start:
                groups[-1].append(c)
            else:
                groups.append([c])
        groups.sort(key=lambda g: min(rank[(c.document_id, c.index)] for c in g))
    passages = []
    for number, group in enumerate(groups, 1):
        doc_id, start, end, text, tokens, members = _merge(group, texts)
        passages.append(Passage(number, doc_id, start, end, text, tokens, members))
    return passages
