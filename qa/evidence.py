"""Focused evidence: from the retrieved chunks, the sentences that bear on the question, with their neighbours.

A chunk is a unit of indexing, not of evidence: a 256-token chunk that holds the answer also holds a
dozen sentences that do not. Sending whole chunks costs prompt tokens (CPU seconds on a local model,
money on a hosted one) and distracts a small model. So after BM25 has found the chunks, their
sentences are ranked against the question (BM25 again, over just those sentences) and the best ones
are sent, each with the sentence before and after it, adjacent windows merged, until the passage
budget is spent. Every passage is still an exact span of its document.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import blingfire
import numpy as np

from qa.chunking import Chunk
from qa.dense import DENSE_WEIGHT, weighted_fusion
from qa.embed.base import Embedder
from qa.retrieval import BM25Retriever, Hit, Passage

__all__ = ["focus", "sentence_spans"]

# Paragraph and line breaks always end a sentence (titles and list items have no full stop).
_LINES = re.compile(r"[^\n]+")


@dataclass(frozen=True, slots=True)
class _Sentence:
    document_id: str
    start: int
    end: int
    rank: int  # best rank of the retrieved chunk it came from
    region: int  # which merged run of retrieved chunks it lies in


def sentence_spans(text: str, start: int, end: int) -> list[tuple[int, int]]:
    """(start, end) offsets of the sentences of `text[start:end]`, whitespace excluded, in order."""
    spans: list[tuple[int, int]] = []
    for line in _LINES.finditer(text, start, end):
        piece = line.group()
        if not piece.strip():
            continue
        _, offsets = blingfire.text_to_sentences_and_offsets(piece)
        base = line.start()
        for s, e in offsets:
            sentence = piece[s:e]
            if stripped := sentence.strip():
                s += len(sentence) - len(sentence.lstrip())
                spans.append((base + s, base + s + len(stripped)))
    return spans


def _regions(hits: Sequence[Chunk]) -> list[tuple[str, int, int, int]]:
    """The retrieved chunks as (document, start, end, best rank), overlapping ones of a document merged."""
    by_doc: dict[str, list[tuple[int, int, int]]] = {}
    for rank, c in enumerate(hits):
        by_doc.setdefault(c.document_id, []).append((c.start, c.end, rank))
    out: list[tuple[str, int, int, int]] = []
    for doc, spans in by_doc.items():
        spans.sort()
        cur_start, cur_end, cur_rank = spans[0]
        for s, e, r in spans[1:]:
            if s <= cur_end:
                cur_end, cur_rank = max(cur_end, e), min(cur_rank, r)
            else:
                out.append((doc, cur_start, cur_end, cur_rank))
                cur_start, cur_end, cur_rank = s, e, r
        out.append((doc, cur_start, cur_end, cur_rank))
    return out


def _with_meaning(question: str, sentences: list[Chunk], lexical: list[Hit], embedder: Embedder) -> list[Hit]:
    """Every sentence, ranked as the hybrid retriever ranks chunks: a weighted sum of its BM25 score (`lexical`)
    and its vector's similarity to the question's, each scaled to [0, 1]."""
    similarity = embedder.embed_passages([s.text for s in sentences]) @ embedder.embed_query(question)
    bm25 = np.zeros(len(sentences), dtype=np.float32)
    for hit in lexical:
        bm25[hit.chunk.index] = hit.score
    return weighted_fusion(sentences, bm25, similarity.astype(np.float32), DENSE_WEIGHT)


def focus(
    question: str,
    hits: Sequence[Chunk],
    texts: Mapping[str, str],
    *,
    budget_tokens: int,
    count_tokens: Callable[[str], int],
    neighbours: int = 1,
    embedder: Embedder | None = None,
) -> list[Passage]:
    """Passages made of the sentences of `hits` (chunks, best first) that best match `question`.

    Each chosen sentence comes with up to `neighbours` sentences on each side; windows that touch are
    merged into one passage. Passages are numbered by relevance, and their text is `texts[doc][start:end]`.
    With an `embedder`, sentences are ranked by words and meaning together (BM25 and the cosine similarity of
    their vectors, fused as the hybrid retriever fuses chunks), so "casualties" finds "killed or wounded"; without
    one, by BM25,
    and when no sentence shares a term with the question the chunks themselves are used, best first.
    """
    sentences: list[_Sentence] = []
    for region, (doc, start, end, rank) in enumerate(_regions(hits)):
        sentences.extend(_Sentence(doc, s, e, rank, region) for s, e in sentence_spans(texts[doc], start, end))
    if not sentences:
        return []
    as_chunks = [
        Chunk(s.document_id, i, s.start, s.end, texts[s.document_id][s.start : s.end], 0)
        for i, s in enumerate(sentences)
    ]
    scored = BM25Retriever(as_chunks).search(question, len(as_chunks))
    if embedder is not None:
        scored = _with_meaning(question, as_chunks, scored, embedder)
    # Sentences in order of relevance; ties go to the better-ranked chunk, then to document order.
    order = sorted(
        ((hit.score, hit.chunk.index) for hit in scored), key=lambda t: (-t[0], sentences[t[1]].rank, t[1])
    )
    if not order:
        order = [(0.0, i) for i in sorted(range(len(sentences)), key=lambda i: (sentences[i].rank, i))]

    tokens: dict[int, int] = {}

    def cost(i: int) -> int:
        if i not in tokens:
            tokens[i] = count_tokens(as_chunks[i].text) + 1
        return tokens[i]

    chosen: dict[int, int] = {}  # sentence index -> relevance rank of the window that brought it
    used = 0
    for relevance, (_, i) in enumerate(order):
        if i in chosen and chosen[i] < relevance:
            continue
        window = [
            j
            for j in range(i - neighbours, i + neighbours + 1)
            if 0 <= j < len(sentences) and sentences[j].region == sentences[i].region
        ]
        # The sentence itself first; neighbours only while they fit.
        for j in sorted(window, key=lambda j: (j != i, abs(j - i), j)):
            if j in chosen:
                continue
            c = cost(j)
            if used + c > budget_tokens:
                if j == i:
                    break
                continue
            chosen[j] = relevance
            used += c
        if used >= budget_tokens:
            break
    if not chosen:
        return []
    # Merge chosen sentences into passages: consecutive sentences of one document within one region.
    groups: list[list[int]] = []
    for i in sorted(chosen):
        prev = groups[-1][-1] if groups else None
        if (
            prev is not None
            and prev == i - 1
            and sentences[prev].region == sentences[i].region
            and not texts[sentences[i].document_id][sentences[prev].end : sentences[i].start].strip()
        ):
            groups[-1].append(i)
        else:
            groups.append([i])
    groups.sort(key=lambda g: (min(chosen[i] for i in g), g[0]))
    passages = []
    for number, group in enumerate(groups, 1):
        first, last = sentences[group[0]], sentences[group[-1]]
        doc = first.document_id
        text = texts[doc][first.start : last.end]
        passages.append(
            Passage(
                number,
                doc,
                first.start,
                last.end,
                text,
                sum(cost(i) for i in group),
                tuple(c for c in hits if c.document_id == doc and c.start < last.end and first.start < c.end),
            )
        )
    return passages
